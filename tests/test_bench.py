"""`unmask bench train`: FLOPs per token by hand, MFU arithmetic, and the paired comparison with the reference."""

from __future__ import annotations

import json

import pytest
import torch

from unmask import cli
from unmask.bench import estimate_step_memory, mfu, peak_flops, step_memory
from unmask.config import ModelConfig
from unmask.model import Transformer, count_params, flops_per_token


def test_flops_per_token_of_the_demo_model_counted_by_hand():
    cfg = ModelConfig(size="demo", vocab_size=1024, seq_len=64)  # 3 layers, d 96, SwiGLU hidden 256
    d, h, L, V, T = 96, 256, 3, 1024, 64
    per_block = 4 * d * d + 3 * d * h + 2 * d  # q, k, v, o; gate, up, down; two RMSNorm gains
    weights = V * d + L * per_block + d  # tied embedding (also the output matmul) and the final norm
    assert count_params(cfg) == weights == sum(p.numel() for p in Transformer(cfg).parameters()) == 430_752
    attention = L * 2 * (2 * T * d) * 3  # per token: q·k over T keys and the weighted sum of T values, fwd + bwd
    assert flops_per_token(cfg) == 6 * weights + attention == 2_805_696
    # MDM projects half of its positions to the vocabulary on average: half the output matmul's 6·V·d.
    assert flops_per_token(cfg, head_fraction=0.5) == 2_805_696 - 3 * V * d


def test_mfu_is_model_flops_per_second_over_the_peak():
    assert mfu(1_000_000, 2_805_696, 989e12) == pytest.approx(1e6 * 2_805_696 / 989e12)
    assert mfu(1_000_000, 2_805_696, None) is None  # no peak known: no MFU, rather than a made-up one
    assert peak_flops(torch.device("cpu")) is None
    assert peak_flops(torch.device("cpu"), override_tflops=2.5) == 2.5e12


@pytest.mark.parametrize(("name", "tflops"), [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
                                              ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L4", 121),
                                              ("NVIDIA GeForce GTX 1080", None)])  # fmt: skip
def test_the_peak_of_a_gpu_is_read_from_its_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    got = peak_flops(torch.device("cuda", 0))
    assert got == (None if tflops is None else tflops * 1e12)


@pytest.mark.slow
def test_bench_train_against_the_reference_reports_paired_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "train", "--against", "reference", "--repeats", "2", "--steps", "2", "--size", "tiny",
            "--batch_size", "4", "--seq_len", "16", "--vocab_size", "300", "--threads", "1",
            "--json", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["sides"]) == {"ar", "mdm", "reference"} and result["repeats"] == 2
    for side in ("ar", "mdm"):
        vs = result["sides"][side]["vs_reference"]
        assert vs["range"][0] <= vs["median"] <= vs["range"][1] and vs["median"] > 0
        flops_ratio = result["sides"][side]["flops_per_token"] / result["sides"]["reference"]["flops_per_token"]
        assert vs["per_flop_median"] == pytest.approx(vs["median"] * flops_ratio)
        assert vs["cpu_time_per_flop_median"] == pytest.approx(vs["cpu_time_median"] * flops_ratio)
    assert result["sides"]["ar"]["flops_per_token"] == result["sides"]["reference"]["flops_per_token"]
    assert result["sides"]["mdm"]["flops_per_token"] < result["sides"]["ar"]["flops_per_token"]
    printed = capsys.readouterr().out
    assert "vs reference" in printed and "reference" in printed


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_the_memory_estimate_on_fake_tensors_is_what_the_real_step_holds(objective):
    """The same step, traced once on real tensors and once on fake ones: the estimate counts the same bytes."""
    cfg = ModelConfig(size="tiny", vocab_size=256, seq_len=32, causal=objective == "ar")
    torch.manual_seed(0)
    real = step_memory(Transformer(cfg).train(), objective, 4, 32)
    fake = estimate_step_memory(cfg, objective, 4)
    assert fake["total"] == pytest.approx(real["total"], rel=0.01)
    assert fake["activations"] == pytest.approx(real["activations"], rel=0.01)


def test_the_memory_estimate_holds_weights_and_adam_moments_and_grows_with_the_batch():
    cfg = ModelConfig(size="tiny", vocab_size=256, seq_len=64, causal=False)
    n = count_params(cfg)
    small, mid, large = (estimate_step_memory(cfg, "mdm", b) for b in (2, 4, 8))
    assert small["parameters"] == pytest.approx(4 * n, rel=0.01)  # fp32 master weights
    assert small["optimizer"] == pytest.approx(8 * n, rel=0.01)  # AdamW's two fp32 moments
    # activations: a part per sequence, plus a fixed part (autocast's bf16 copies of the weights)
    per_2_sequences = mid["activations"] - small["activations"]
    assert per_2_sequences > 0
    assert large["activations"] - mid["activations"] == pytest.approx(2 * per_2_sequences, rel=0.05)
    recomputed = estimate_step_memory(cfg, "mdm", 8, activation_checkpointing=True)
    assert recomputed["activations"] < large["activations"] / 2


def test_bench_memory_prints_and_writes_the_estimate(tmp_path, capsys):
    out = tmp_path / "memory.json"
    args = ["bench", "memory", "--size", "tiny", "--seq_len", "32", "--batch_size", "2", "--vocab_size", "256",
            "--json", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    for side in ("ar", "mdm"):
        mem = result["sides"][side]
        assert mem["total"] >= mem["parameters"] + mem["optimizer"] + mem["activations"]
    assert "estimated peak tensor memory" in capsys.readouterr().out
