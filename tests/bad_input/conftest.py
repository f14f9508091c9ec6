"""The bad-input catalogues of the newer surfaces (fine-tuning, study, sampling bounds, lm-eval, full disks) share
tests/test_bad_input.py's contract and helpers: one tiny AR and one tiny MDM run, trained once for the session,
each case working on its own copies; every error line a command prints is checked for an internal error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_bad_input import Pristine, _one_parser, no_internal_error, train_pristine, ws  # noqa: F401
from unmask import finetune_cli

CONVERSATIONS = [{"prompt": f"say {w}", "response": f"{w} {w}"} for w in "abcdefghijklmnopqrstuvwxyz"]
"""Short conversations (a dozen tokens) that fit the tiny runs' 32-token sequence."""


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, tiny_data_dir) -> Pristine:
    return train_pristine(tmp_path_factory.mktemp("bad_input_new"), tiny_data_dir)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def folders(pristine) -> dict[str, Path]:
    """An instruction folder prepared for each tiny base run ('ar', 'mdm')."""
    data = write_jsonl(pristine.root / "conversations.jsonl", CONVERSATIONS)
    out = {objective: pristine.root / f"sft-data-{objective}" for objective in ("ar", "mdm")}
    for objective, folder in out.items():
        finetune_cli.prepare(str(pristine.runs[objective]), str(folder), data=str(data), val_share=0.2)
    return out


@pytest.fixture(scope="session")
def sft_run(pristine, folders) -> Path:
    """A tiny sft_mdm run of the MDM base (the start of R2FT)."""
    from unmask.config import TrainConfig
    from unmask.finetune.sft import sft

    cfg = TrainConfig(epochs=1, batch_size=8, eval_mc_passes=1, final_mc_passes=1)
    return sft(pristine.runs["mdm"], folders["mdm"], pristine.root / "sft-mdm", cfg, quiet=True, tensorboard=False)


def copy(path: Path, to: Path) -> Path:
    return Path(shutil.copytree(path, to))
