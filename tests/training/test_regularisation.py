"""Regularisation for a fair AR arm (Study II): weight decay on the intended parameters only, dropout and AR
input noise in training only, validation unchanged by either."""

from __future__ import annotations

import pytest
import torch

from tests.objectives.test_objectives import SP, V, tiny
from unmask.config import ArConfig, ConfigError, OptimConfig, TrainConfig
from unmask.objectives import Batch, objective_for
from unmask.objectives.ar import ar_loss, corrupt_inputs
from unmask.training.optim import make_optimizer


def test_weight_decay_shrinks_every_matrix_and_no_norm_weight():
    model = tiny(causal=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, OptimConfig(lr=0.1, weight_decay=3.0))  # 30x the default, the sweep's top
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's step is 0: only the decoupled decay moves a weight
    opt.step()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 3.0) if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, msg=name)
    assert any(p.dim() < 2 for p in model.parameters())  # the norms exist, and kept their weights


@pytest.mark.parametrize("kind", ["mask", "random"])
def test_ar_input_noise_corrupts_the_inputs_at_its_rate_and_never_the_targets(kind):
    x = torch.randint(3, V, (64, 32), generator=torch.Generator().manual_seed(0))
    x[0, 20:] = SP.pad_id
    real = x != SP.pad_id
    noisy = corrupt_inputs(x, real, 0.25, kind, SP, torch.Generator().manual_seed(1))
    changed = noisy != x
    assert not changed[~real].any()  # padding stays padding
    if kind == "mask":
        assert (noisy[changed] == SP.mask_id).all() and abs(float(changed[real].float().mean()) - 0.25) < 0.02
    else:  # a token of the batch: sometimes the same one, so fewer than 25% change
        assert (
            set(noisy[changed].tolist()) <= set(x[real].tolist()) and 0.18 < float(changed[real].float().mean()) < 0.25
        )

    model = tiny(causal=True, seq_len=32)
    clean = ar_loss(model, x, SP)
    with_noise = ar_loss(model, x, SP, torch.Generator().manual_seed(1), 0.25, kind)
    assert with_noise.n_tokens == clean.n_tokens and float(with_noise.loss_sum.detach()) != float(
        clean.loss_sum.detach()
    )


def test_ar_input_noise_is_training_only_validation_reads_clean_inputs():
    cfg = TrainConfig.from_flat(objective="ar", ar_input_noise=0.3)
    ar = objective_for(cfg)
    model = tiny(causal=True, seq_len=16)
    x = torch.randint(3, V, (8, 16), generator=torch.Generator().manual_seed(0))
    train_loss = ar.loss(model, Batch(x), SP, torch.Generator().manual_seed(0))
    eval_sum = ar.validation_passes(model, [Batch(x)], 1, torch.Generator().manual_seed(0), SP, 16_384)
    assert torch.equal(eval_sum, ar_loss(model, x, SP).loss_sum[None])
    assert not torch.equal(train_loss.loss_sum, eval_sum[0])
    off = objective_for(cfg.with_flat(ar_input_noise=0.0)).loss(model, Batch(x), SP, torch.Generator().manual_seed(0))
    assert torch.equal(off.loss_sum, ar_loss(model, x, SP).loss_sum)  # off: the plain loss, bitwise


def test_dropout_acts_in_training_mode_only():
    from unmask.config import ModelConfig
    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=V, seq_len=8, causal=True, dropout=0.5))
    x = torch.randint(3, V, (2, 8))
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("options", [dict(input_noise=1.0), dict(input_noise=-0.1), dict(input_noise_kind="x")])
def test_bad_regularisation_options_are_refused(options):
    with pytest.raises(ConfigError, match="train.ar.input_noise"):
        ArConfig(**options)
