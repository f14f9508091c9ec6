"""The bad-input suites share one contract and harness (contract.py: its fixtures are registered here): the session's
tiny AR and MDM runs (tests/conftest.py's trained_runs, as `pristine`), each case working on its own copies; every
error line a command prints is checked for an internal error."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tests.bad_input.contract import TRAINED, _one_parser, no_internal_error, ws  # noqa: F401
from tests.conftest import TinyRuns
from unmask.cli import finetune as finetune_commands
from unmask.study import pipeline

CONVERSATIONS = [{"prompt": f"say {w}", "response": f"{w} {w}"} for w in "abcdefghijklmnopqrstuvwxyz"]
"""Short conversations (a dozen tokens) that fit the tiny runs' 32-token sequence."""


@pytest.fixture(scope="session")
def pristine(trained_runs: TinyRuns) -> TinyRuns:
    """The session's tiny runs, checked to be trained with TRAINED's settings (the catalogues derive from them)."""
    saved = json.loads((trained_runs.runs["ar"] / "config.json").read_text())
    assert saved["model"] == dataclasses.asdict(dataclasses.replace(TRAINED["model"], size=None))
    assert saved["train"] == dataclasses.asdict(TRAINED["train"])
    return trained_runs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def finetune_root(tmp_path_factory) -> Path:
    """Where `folders` and `sft_run` go: beside the shared runs, not among them, so that only the fine-tuning
    cases' snapshots (tests/bad_input/test_finetune.py's `ws`) spend time on them."""
    return tmp_path_factory.mktemp("bad_input_finetune")


@pytest.fixture(scope="session")
def folders(pristine: TinyRuns, finetune_root: Path) -> dict[str, Path]:
    """An instruction folder prepared for each tiny base run ('ar', 'mdm')."""
    data = write_jsonl(finetune_root / "conversations.jsonl", CONVERSATIONS)
    out = {objective: finetune_root / f"sft-data-{objective}" for objective in ("ar", "mdm")}
    for objective, folder in out.items():
        finetune_commands.prepare(str(pristine.runs[objective]), str(folder), data=str(data), val_share=0.2)
    return out


@pytest.fixture(scope="session")
def sft_run(pristine, folders, finetune_root) -> Path:
    """A tiny sft_mdm run of the MDM base (the start of R2FT)."""
    from unmask.config import TrainConfig
    from unmask.finetune.sft import sft

    cfg = TrainConfig.from_flat(epochs=1, batch_size=8, eval_mc_passes=1, final_mc_passes=1)
    return sft(pristine.runs["mdm"], folders["mdm"], finetune_root / "sft-mdm", cfg, quiet=True, tensorboard=False)


def copy(path: Path, to: Path) -> Path:
    return Path(shutil.copytree(path, to))


DOCS_FIT = Path(__file__).parents[2] / "docs" / "study" / "mini" / "fit.json"
STUDY = """
name: bad
out: {out}
data: {{vocab_size: 300, seq_len: 32, val_tokens: 512, tokenizer_train_bytes: 200000}}
train: {{batch_size: 8, eval: {{mc_passes: 1, final_mc_passes: 2}}}}
objectives: [ar, mdm]
sizes: [tiny]
unique_tokens: [2000]
epochs: [1]
workers: 1
"""
RUNS = ("ar-tiny-U2000-E1-s0", "mdm-tiny-U2000-E1-s0")


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory) -> Path:
    """A finished tiny study (its runs, table, failures.json) with a fit.json as rich as a real one: the committed
    mini study's fit under this study's name (one point per objective fits nothing)."""
    root = tmp_path_factory.mktemp("study")
    config = root / "study.yaml"
    config.write_text(STUDY.format(out=root / "out"))
    pipeline.run_study(config, quiet=True)
    fitted = json.loads(DOCS_FIT.read_text())
    (root / "out" / "fit.json").write_text(json.dumps({**fitted, "study": "bad"}, indent=1))
    return root / "out"
