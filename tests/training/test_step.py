"""The optimiser step is two functions of their inputs (unmask.training.step): the loop runs them, and
`unmask bench train` / `bench memory` run the very same ones, so the benchmarks time the step training takes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_train_config
from unmask.config import ModelConfig
from unmask.model import Transformer, read_weights
from unmask.objectives import Specials, objective_for
from unmask.run import Run
from unmask.runtime import Runtime
from unmask.training import Budget, Trainer, learning_rate, make_optimizer, train
from unmask.training.step import accumulate_gradients, apply_update


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_a_runs_first_step_is_the_step_functions(tiny_data, tiny_data_dir, tmp_path, objective):
    cfg = tiny_train_config(objective=objective, stop_at_step=1, micro_batch_size=4)  # two micro-batches
    run = Run(train(tiny_data_dir, tmp_path / "run", ModelConfig(size="tiny"), cfg, quiet=True))

    torch.manual_seed(cfg.seed)  # as train() builds the model
    model = Transformer(run.model_config)
    optimizer = make_optimizer(model, cfg.optim)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(0, Budget.of(tiny_data, cfg), cfg.optim)
    x = tiny_data.batch("train", tiny_data.epoch_order(0, cfg.seed)[: cfg.batch_size])
    loss = objective_for(cfg)
    runtime = Runtime(torch.device("cpu"), compile=False)
    loss_sum = accumulate_gradients(
        model=model, micro_batches=[(k, 1.0, chunk) for k, chunk in enumerate(x.split(4))],
        loss_fn=loss.loss, specials=Specials(tiny_data.mask_id, tiny_data.pad_id),
        generator=torch.Generator(), runtime=runtime, seed=cfg.seed, step=0, n_step=loss.n_targets(x, tiny_data.pad_id),
    )  # fmt: skip
    _, stepped = apply_update(parameters=list(model.parameters()), optimizer=optimizer, grad_clip=cfg.optim.grad_clip,
                              loss=float(loss_sum))  # fmt: skip

    assert stepped
    logged = next(r for r in run.metrics() if r.get("step") == 1 and "loss" in r)
    assert logged["loss"] == float(loss_sum) / loss.n_targets(x, tiny_data.pad_id)
    saved = read_weights(run.path / "last.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_a_non_finite_loss_leaves_the_weights_and_moments_untouched():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.ones(1, 3)).sum().backward()
    grad_norm, stepped = apply_update(parameters=list(model.parameters()), optimizer=optimizer, grad_clip=1.0,
                                      loss=float("nan"))  # fmt: skip
    assert not stepped and torch.isfinite(grad_norm) and not optimizer.state
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step


def test_the_trainer_takes_keywords_only():
    with pytest.raises(TypeError):
        Trainer(None, None, None, None, None, None)  # type: ignore[misc]
