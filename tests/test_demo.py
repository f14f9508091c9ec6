"""The demo end to end, shrunk: runs in parallel worker processes, table, plot, samples, findings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.demo import DemoConfig, demo
from unmask.report import findings


@pytest.mark.slow
def test_tiny_demo_writes_table_plot_and_samples(tmp_path, capsys):
    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        data=DataConfig(unique_tokens=2_000, val_tokens=512, vocab_size=300, seq_len=32, tokenizer_train_bytes=300_000),
        model=ModelConfig(size="tiny"),
        train=TrainConfig.from_flat(batch_size=8, eval_every=0, eval_mc_passes=2),
        ar_epochs=[1, 3],
        mdm_epochs=[1, 3],
        workers=2,
        samples=1,
    )
    results = demo(cfg)
    out = capsys.readouterr().out
    assert "validation loss" in out and "After 1 epoch" in out
    assert (tmp_path / "demo" / "loss_vs_epochs.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert {(r["objective"], r["epochs"]) for r in saved["runs"]} == {("ar", 1), ("ar", 3), ("mdm", 1), ("mdm", 3)}
    for r in saved["runs"]:
        assert r["tokens_seen"] == 2_000 * r["epochs"]
    assert set(results["samples"]) == {"ar", "mdm"}

    # A second call reuses the finished runs (same data, same configs) and only redraws.
    mtime = (tmp_path / "demo" / "ar-E3" / "best.safetensors").stat().st_mtime
    demo(cfg)
    assert (tmp_path / "demo" / "ar-E3" / "best.safetensors").stat().st_mtime == mtime

    # Changed settings retrain instead of reporting stale numbers.
    changed = dataclasses.replace(cfg, train=cfg.train.with_flat(lr=1e-3), ar_epochs=[3], mdm_epochs=[])
    demo(changed)
    assert json.loads((tmp_path / "demo" / "ar-E3" / "config.json").read_text())["train"]["optim"]["lr"] == 1e-3


def test_findings_say_what_the_numbers_show():
    def run(objective, epochs, best, best_epoch, final):
        return {
            "objective": objective,
            "epochs": epochs,
            "best_val_loss": best,
            "best_epoch": best_epoch,
            "final_val_loss": final,
            "last_val_loss": final,
        }

    results = {
        "runs": [
            run("ar", 1, 5.9, 1, 5.9),
            run("ar", 8, 5.4, 7, 5.45),
            run("ar", 32, 5.2, 9, 6.5),
            run("mdm", 1, 6.3, 1, 6.3),
            run("mdm", 64, 5.3, 64, 5.3),
        ],
        "best": {"ar": {"final_val_loss": 5.45}, "mdm": {"final_val_loss": 5.3}},
        "unigram": 6.0,
    }
    text = "\n".join(findings(results))
    assert "its best run ends 0.700 nats below the unigram cross-entropy of the validation split (6.000)" in text
    plateau = "\n".join(findings({**results, "unigram": 5.35}))
    assert "MDM has not left the unigram plateau (5.350): its best run ends at 5.300" in plateau
    assert "After 1 epoch AR is better" in text
    assert "AR is best at 8 epochs (5.450)" in text and "32 epochs end at 6.500" in text
    assert "the 32-epoch run bottoms at 5.200 (epoch 9) and ends at 6.500" in text
    assert "MDM is still improving at the largest epoch count (64)" in text
    assert "MDM's best run (5.300) beats AR's best run (5.450)" in text
    assert "AR's lowest loss anywhere, 5.200, needs early stopping" in text
    assert "upper bounds" in text
