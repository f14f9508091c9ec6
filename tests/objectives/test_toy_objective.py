"""A new objective is one small class: registered here, in the test alone, it trains, evaluates and samples.

The toy masks every real token with probability 1/2 and weights each masked cross-entropy by 2 — a
bound objective without a batched estimator, so validation takes the default K loops of its loss.
Nothing outside this file knows its name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_model_config, tiny_train_config
from unmask import cli
from unmask.objectives import OBJECTIVES, Batch, LossOutput, Objective, register
from unmask.objectives.mdm import masked_token_ce
from unmask.run import Run
from unmask.training import train

TASKS = Path(__file__).parents[1] / "fixtures" / "austen_mc.jsonl"


class Toy(Objective):
    name, causal, exact, decoder = "toy_half_mask", False, False, "mdm"

    def loss(self, model, batch: Batch, sp, generator=None) -> LossOutput:
        x = batch.tokens  # (B, T); plain sequences carry no loss mask
        real = x != sp.pad_id
        masked = (torch.rand(x.shape, generator=generator, device=x.device) < 0.5) & real
        weight = torch.full((len(x),), 2.0, device=x.device)
        ce, _ = masked_token_ce(model, x, masked, weight, sp.mask_id, None if bool(real.all()) else real)
        return LossOutput(ce.sum(), int(real.sum()))

    def n_targets(self, batch: Batch, pad_id) -> int:
        return int((batch.tokens != pad_id).sum())


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.delitem(OBJECTIVES, Toy.name, raising=False)  # restored (removed) after the test
    register(Toy)
    yield Toy
    OBJECTIVES.pop(Toy.name, None)


def test_a_toy_objective_trains_evaluates_and_samples(toy_registered, tiny_data, tmp_path, capsys):
    out = train(
        tiny_data.path,
        tmp_path / "toy",
        tiny_model_config(tiny_data),
        tiny_train_config(objective=Toy.name, epochs=3, eval_every=4, eval_mc_passes=3, final_mc_passes=3),
        quiet=True,
        tensorboard=False,
    )
    run = Run(out)
    assert isinstance(run.objective, Toy) and run.model_config.causal is False  # the class chose the attention
    evals = [r for r in run.metrics() if "val_loss" in r]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3  # it learns
    assert all(r["val_stderr"] is not None for r in evals)  # a bound: K Monte Carlo passes with a spread

    assert cli.main(["eval", str(out), "--tasks", str(TASKS), "--limit", "3", "--json", "true"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["objective"] == Toy.name and result["kind"].startswith("ELBO") and result["passes"] == 32
    assert result["tasks"]["austen_mc"]["n"] == 3

    assert cli.main(["sample", str(out), "--prompt", "She was", "--length", "6", "--json", "true"]) == 0
    sample = json.loads(capsys.readouterr().out)
    assert sample["objective"] == Toy.name and sample["texts"][0].startswith("She was") and sample["steps"] == 6
