"""The runtime's choices: activation checkpointing, the optimiser's kernel, and the GPU path (bf16 autocast with
fp32 master weights, torch.compile, fused AdamW): on a GPU where CUDA is present, and its autocast logic on the
CPU too, CPU autocast standing in."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model_config, tiny_train_config
from unmask.model import Transformer
from unmask.objectives import Specials, get_objective, objective_for
from unmask.run import Run, read_metrics
from unmask.training import make_optimizer, train

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the bf16 autocast / torch.compile / fused AdamW path"
)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_activation_checkpointing_changes_memory_not_results(tiny_data, objective):
    cfg = tiny_model_config(tiny_data, causal=get_objective(objective).causal)
    x = tiny_data.batch("train", np.arange(8))
    loss_fn = objective_for(tiny_train_config(objective=objective)).loss
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = Transformer(cfg)
        model.activation_checkpointing = recompute
        out = loss_fn(model, x, Specials(tiny_data.mask_id, tiny_data.pad_id), torch.Generator().manual_seed(1))
        out.loss_sum.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_a_run_with_activation_checkpointing_trains_and_records_it(tiny_data, tmp_path):
    out = train(tiny_data.path, tmp_path / "r", tiny_model_config(tiny_data),
                tiny_train_config(objective="mdm", epochs=1, activation_checkpointing=True), quiet=True,
                tensorboard=False)  # fmt: skip
    assert Run(out).train_config.runtime.activation_checkpointing
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_adamw_is_fused_on_the_cpu_too(tiny_data):
    optimizer = make_optimizer(Transformer(tiny_model_config(tiny_data)), tiny_train_config().optim)
    assert optimizer.defaults["fused"] and not optimizer.defaults["foreach"]


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_the_bf16_path_keeps_fp32_master_weights_and_losses_on_the_cpu_too(tiny_data, tmp_path, monkeypatch, objective):
    """The GPU's autocast path, run with CPU autocast standing in (bf16 matmuls, as on the GPU): the losses the
    objectives return are fp32, the weights stay fp32, and the run tracks the fp32 one to bf16 rounding."""
    from unmask.runtime import Runtime

    cfg = tiny_model_config(tiny_data, causal=get_objective(objective).causal)
    loss_fn = objective_for(tiny_train_config(objective=objective)).loss
    with torch.autocast("cpu", torch.bfloat16):
        out = loss_fn(Transformer(cfg), tiny_data.batch("train", np.arange(4)),
                      Specials(tiny_data.mask_id, tiny_data.pad_id), torch.Generator().manual_seed(1))  # fmt: skip
    assert out.loss_sum.dtype == torch.float32
    runs = {}
    for bf16 in (False, True):
        monkeypatch.setattr(Runtime, "autocast_enabled", property(lambda self, on=bf16: on))
        out = train(tiny_data.path, tmp_path / f"bf16-{bf16}", cfg, tiny_train_config(objective=objective, epochs=1),
                    quiet=True, tensorboard=False)  # fmt: skip
        runs[bf16] = [r["loss"] for r in read_metrics(out) if "loss" in r]
        assert {w.dtype for w in Run(out).load_model("last").state_dict().values()} == {torch.float32}
    assert all(np.isfinite(runs[True])) and runs[True] != runs[False]  # bf16 rounding shows: autocast was on
    assert runs[True] == pytest.approx(runs[False], rel=0.05)


@requires_cuda
def test_gpu_training_uses_bf16_autocast_with_fp32_master_weights_and_fused_adamw(tiny_data, tmp_path):
    out = train(tiny_data.path, tmp_path / "gpu", tiny_model_config(tiny_data),
                tiny_train_config(objective="mdm", epochs=2, device="cuda", compile=False), quiet=True,
                tensorboard=False)  # fmt: skip
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert all(torch.isfinite(torch.tensor(losses))) and sum(losses[-3:]) < sum(losses[:3])
    weights = Run(out).load_model("last").state_dict()
    assert {w.dtype for w in weights.values()} == {torch.float32}  # the master weights stay fp32
    model = Transformer(tiny_model_config(tiny_data)).cuda()
    assert make_optimizer(model, tiny_train_config().optim).defaults["fused"]
    with torch.autocast("cuda", torch.bfloat16):
        assert model(tiny_data.batch("train", np.arange(1)).tokens.cuda()).dtype == torch.bfloat16


@requires_cuda
@pytest.mark.slow
def test_compiled_gpu_training_matches_eager(tiny_data, tmp_path):
    runs = {}
    for compiled in (False, True):
        out = train(tiny_data.path, tmp_path / f"c{compiled}", tiny_model_config(tiny_data),
                    tiny_train_config(objective="ar", epochs=1, device="cuda", compile=compiled), quiet=True,
                    tensorboard=False)  # fmt: skip
        runs[compiled] = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert runs[True] == pytest.approx(runs[False], rel=2e-2)  # bf16 kernels differ in rounding, not in result


requires_compiler = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (inductor's CPU back-end); none is installed",
)


@requires_compiler
@pytest.mark.slow
def test_compiled_cpu_training_matches_eager(tiny_data, tmp_path):
    """torch.compile (inductor, CPU) trains the same run: RoPE takes its real form there (inductor cannot
    generate complex kernels), the same rotation as eager's complex multiply."""
    runs = {}
    for compiled in (False, True):
        out = train(tiny_data.path, tmp_path / f"c{compiled}", tiny_model_config(tiny_data),
                    tiny_train_config(objective="ar", epochs=1, compile=compiled), quiet=True,
                    tensorboard=False)  # fmt: skip
        runs[compiled] = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert runs[True] == pytest.approx(runs[False], rel=1e-4, abs=1e-5)


@requires_compiler
def test_rope_under_compile_is_the_eager_rotation():
    from unmask.model import apply_rope, rope_table

    x, rotation = torch.randn(2, 3, 8, 16), rope_table(8, 16, 10_000.0)
    torch.testing.assert_close(torch.compile(apply_rope)(x, rotation), apply_rope(x, rotation))
