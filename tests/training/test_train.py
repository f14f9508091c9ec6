"""Training: exact budgets, one schedule, golden losses, exact resume, run directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_DATA, tiny_model_config, tiny_train_config
from unmask.config import TrainConfig
from unmask.run import RUN_FILES, Run, read_metrics
from unmask.training import Budget, learning_rate, train

GOLDEN = Path(__file__).parents[1] / "golden" / "mdm_30_steps.json"


def run(tiny_data, out, **overrides):
    cfg = tiny_train_config(**overrides)
    return train(tiny_data.path, out, tiny_model_config(tiny_data), cfg, quiet=True, tensorboard=False)


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


@pytest.mark.parametrize("epochs", [1, 3])
def test_E_epochs_consume_exactly_E_times_U_tokens(tiny_data, tmp_path, epochs):
    out = run(tiny_data, tmp_path / "r", objective="ar", epochs=epochs, eval_every=1000)
    budget = json.loads((out / "budget.json").read_text())
    steps = [r for r in read_metrics(out) if "loss" in r]
    assert steps[-1]["tokens_seen"] == epochs * TINY_DATA.unique_tokens == budget["tokens_to_see"]
    assert len(steps) == budget["total_steps"] == epochs * budget["steps_per_epoch"]


def test_each_epoch_is_a_fresh_shuffle_of_the_same_sequences(tiny_data):
    a, b = tiny_data.epoch_order(0, seed=0), tiny_data.epoch_order(1, seed=0)
    assert sorted(a.tolist()) == sorted(b.tolist()) == list(range(tiny_data.n_sequences("train")))
    assert a.tolist() != b.tolist()


def test_one_cosine_schedule_spans_the_whole_run(tiny_data):
    cfg = TrainConfig.from_flat(epochs=100, batch_size=8, lr=1e-3, warmup_frac=0.01, min_lr_ratio=0.1)
    budget = Budget.of(tiny_data, cfg)
    lrs = [learning_rate(s, budget, cfg.optim) for s in range(budget.total_steps)]
    assert budget.warmup_steps == round(0.01 * budget.total_steps)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[budget.warmup_steps - 1] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3)
    middle = budget.warmup_steps + (budget.total_steps - budget.warmup_steps) // 2
    assert lrs[middle] == pytest.approx(0.55e-3, rel=1e-2)


def test_golden_loss_curve(tiny_data, tmp_path):
    """A seeded 30-step CPU run reproduces its recorded losses (regenerate: UNMASK_UPDATE_GOLDEN=1)."""
    out = run(tiny_data, tmp_path / "r", objective="mdm", epochs=3, eval_every=1000)
    got = losses(out)[:30]
    assert len(got) == 30
    if os.environ.get("UNMASK_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"torch": torch.__version__, "losses": got}, indent=1))
    expected = json.loads(GOLDEN.read_text())["losses"]
    assert got == pytest.approx(expected, abs=2e-3)
    assert sum(got[-10:]) < sum(got[:10])


@pytest.mark.parametrize("objective", ["mdm", "ar_orderings"])
def test_resume_after_interruption_continues_with_identical_losses(tiny_data, tmp_path, objective):
    full = run(tiny_data, tmp_path / "full", objective=objective, epochs=2)
    part = run(tiny_data, tmp_path / "part", objective=objective, epochs=2, stop_at_step=7)
    assert len(losses(part)) == 7
    train(None, part, resume=True, quiet=True, tensorboard=False)
    assert losses(part) == losses(full)  # bitwise on CPU
    a = Run(full).load_model("last")
    b = Run(part).load_model("last")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_run_directory_is_self_describing(tiny_data, tmp_path):
    out = run(tiny_data, tmp_path / "r", objective="mdm", epochs=1)
    for name in RUN_FILES:
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["objective"] == "mdm" and config["model"]["causal"] is False
    assert json.loads((out / "provenance.json").read_text())["torch"] == torch.__version__
    evals = [r for r in read_metrics(out) if "val_loss" in r]
    assert evals and all(r["val_stderr"] is not None for r in evals)  # MDM: MC standard error


def test_training_reduces_validation_loss_for_every_objective(tiny_data, tmp_path):
    for objective in ("ar", "mdm", "ar_orderings"):
        out = run(tiny_data, tmp_path / objective, objective=objective, epochs=3, eval_every=4)
        evals = [r["val_loss"] for r in read_metrics(out) if "val_loss" in r]
        assert evals[-1] < evals[0] - 0.3, (objective, evals)


def test_existing_run_directory_is_never_overwritten(tiny_data, tmp_path):
    out = run(tiny_data, tmp_path / "r", objective="ar", epochs=1)
    before = (out / "metrics.jsonl").read_text()
    from unmask.config import ConfigError

    with pytest.raises(ConfigError, match="already exists; pass --resume true"):
        run(tiny_data, out, objective="ar", epochs=1)
    assert (out / "metrics.jsonl").read_text() == before


def test_gradient_accumulation_matches_the_full_batch(tiny_data, tmp_path):
    """Micro-batches are normalised by the whole step's token count, so the update is the same."""
    full = run(tiny_data, tmp_path / "full", objective="ar", epochs=1, eval_every=1000)
    accumulated = run(tiny_data, tmp_path / "acc", objective="ar", epochs=1, eval_every=1000, micro_batch_size=2)
    assert losses(accumulated) == pytest.approx(losses(full), rel=1e-4)
    a = Run(full).load_model("last")
    b = Run(accumulated).load_model("last")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=2e-4, rtol=1e-3)  # summation order differs


def test_metrics_also_go_to_tensorboard(tiny_data, tmp_path):
    out = train(
        tiny_data.path,
        tmp_path / "r",
        tiny_model_config(tiny_data),
        tiny_train_config(objective="ar", epochs=1),
        quiet=True,
        tensorboard=True,
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    records = read_metrics(out)
    for key in ("loss", "lr", "val_loss"):  # every scalar of metrics.jsonl, at its step, with its value
        logged = [(r["step"], r[key]) for r in records if key in r]
        board = [(e.step, e.value) for e in events.Scalars(key)]
        assert len(board) == len(logged) > 0, key
        assert [s for s, _ in board] == [s for s, _ in logged]
        assert [v for _, v in board] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_a_data_folder_without_validation_tokens_is_refused_before_any_work(tmp_path):
    from unmask.config import ConfigError, DataConfig
    from unmask.data import TokenData, prepare

    one_file = tmp_path / "novel.txt"
    one_file.write_text("A single document with no blank lines at all. " * 200)
    cfg = DataConfig(inputs=[str(one_file)], doc_split="file", unique_tokens=500, vocab_size=300, seq_len=16)
    data = TokenData(prepare(cfg, tmp_path / "data", quiet=True))  # one document: all of it trains
    assert data.n_tokens("val") == 0
    with pytest.raises(ConfigError, match=r"holds 0 validation tokens.*--data.doc_split file: use blank or auto"):
        train(data.path, tmp_path / "run", tiny_model_config(data), tiny_train_config(epochs=1), quiet=True)
    assert not (tmp_path / "run").exists()
