"""Imported runs are runs like any other: they serve a request, evaluate text and fine-tune (SFT) unchanged."""

from __future__ import annotations

import pytest

from tests.open_models.checkpoints import WORDS, write_hf, write_llada
from tests.test_cli import unmask
from unmask.hub import import_checkpoint
from unmask.run import Run


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, str]:
    """A tiny LLaDA (MDM) and, where transformers is installed, a tiny Llama (AR), imported."""
    root = tmp_path_factory.mktemp("imported")
    write_llada(root / "llada-hf")
    runs = {"llada": str(import_checkpoint(root / "llada-hf", root / "llada"))}
    try:
        write_hf("llama", root / "llama-hf")
        runs["llama"] = str(import_checkpoint(root / "llama-hf", root / "llama"))
    except ImportError:
        pass
    return runs


def test_an_imported_run_serves_one_request(imported):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from unmask.serve.app import BackgroundServer, create_app
    from unmask.serve.config import ServeConfig
    from unmask.serve.engine import load_models

    with BackgroundServer(create_app(load_models(list(imported.values())), ServeConfig(max_tokens=8))) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            for name in imported:
                reply = client.post("/v1/completions", json={"model": name, "prompt": "the a of", "max_tokens": 6})
                assert reply.status_code == 200, reply.text
                assert isinstance(reply.json()["choices"][0]["text"], str)


def test_an_imported_run_evaluates_text(imported, capsys, tmp_path):
    text = tmp_path / "valid.txt"
    text.write_text(" ".join(WORDS * 20))
    for run in imported.values():
        code, out, err = unmask(capsys, "eval", run, "--text", text)
        assert code == 0, err


def test_an_imported_mdm_fine_tunes_a_few_steps(imported, capsys, tmp_path):
    code, _, err = unmask(capsys, "finetune", "prepare", imported["llada"], "--out", tmp_path / "sft-data",
                          "--per_task", "20")  # fmt: skip
    assert code == 0, err
    code, _, err = unmask(capsys, "finetune", "sft", imported["llada"], "--data", tmp_path / "sft-data",
                          "--out", tmp_path / "sft", "--train.checkpoint.stop_at_step", "3",
                          "--train.batch_size", "4")  # fmt: skip
    assert code == 0, err
    run = Run(tmp_path / "sft")
    assert run.objective.name == "sft_mdm" and [r["step"] for r in run.metrics() if "loss" in r] == [1, 2, 3]
