"""The one Transformer: sizes, causality, padding, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask.config import ConfigError, ModelConfig
from unmask.model import SIZES, Transformer, count_params, load_model, save_model


@pytest.mark.parametrize("size", ["tiny", "demo", "7M"])
def test_closed_form_parameter_count_matches_the_built_model(size):
    cfg = ModelConfig(size=size, vocab_size=1024 if size != "7M" else 50304)
    assert sum(p.numel() for p in Transformer(cfg).parameters()) == count_params(cfg)


def test_size_names_match_their_parameter_counts():
    """Paper-scale rows are named by total parameters at the GPT-2 vocabulary (50304), within 10%."""
    scale = {"M": 1e6, "B": 1e9}
    for name in SIZES:
        if name in ("tiny", "demo", "demo4x"):
            continue
        target = float(name[:-1]) * scale[name[-1]]
        actual = count_params(ModelConfig(size=name, vocab_size=50304))
        assert abs(actual / target - 1) < 0.10, (name, actual)
    assert abs(count_params(ModelConfig(size="demo", vocab_size=1024)) / 0.43e6 - 1) < 0.02
    non_embedding = {
        n: count_params(ModelConfig(size=n, vocab_size=1024)) - 1024 * SIZES[n][1] for n in ("demo", "demo4x")
    }
    assert 3.5 < non_embedding["demo4x"] / non_embedding["demo"] < 4.5  # the studies' second size


def test_ar_has_no_future_leakage():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=True)).eval()
    x = torch.randint(0, 64, (2, 16))
    for j in (5, 15):
        y = x.clone()
        y[:, j] = (y[:, j] + 1) % 64
        a, b = model(x), model(y)
        assert torch.equal(a[:, :j], b[:, :j])  # bitwise: position i < j never sees token j
        assert not torch.allclose(a[:, j:], b[:, j:])


def test_mdm_attends_both_ways():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=False)).eval()
    x = torch.randint(0, 64, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 64
    assert not torch.allclose(model(x)[:, :10], model(y)[:, :10])


@pytest.mark.parametrize("causal", [True, False])
def test_padding_changes_nothing_for_real_tokens(causal):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=causal)).eval()
    real = torch.randint(0, 64, (1, 10))
    padded = torch.cat([real, torch.full((1, 6), 3)], dim=1)
    keep = torch.arange(16)[None] < 10
    expected = model(real)
    got = model(padded, key_padding_mask=keep)[:, :10]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_save_then_load_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=False)).eval()
    save_model(model, tmp_path / "best.safetensors")
    loaded = load_model(tmp_path / "best.safetensors")
    x = torch.randint(0, 64, (3, 16))
    assert torch.equal(model(x), loaded(x))
    assert dataclasses.replace(loaded.cfg, size="tiny") == model.cfg


def test_impossible_shapes_are_rejected_by_name():
    with pytest.raises(ConfigError, match="model.d_model=100 is not divisible by model.n_head=3"):
        ModelConfig(d_model=100, n_head=3)
    with pytest.raises(ConfigError, match="model.size='huge'"):
        ModelConfig(size="huge")


def test_output_mask_gives_the_same_logits_at_the_selected_positions():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=False)).eval()
    x = torch.randint(0, 64, (2, 16))
    select = torch.rand(2, 16) < 0.4
    torch.testing.assert_close(model(x, output_mask=select), model(x)[select])


def test_qk_norm_is_off_by_default_and_adds_no_weights_then():
    """Off, the model is the original one: same weight names (old checkpoints load), same logits for a seed."""
    plain = ModelConfig(size="tiny", vocab_size=64, seq_len=16)
    assert plain.qk_norm is False
    torch.manual_seed(0)
    model = Transformer(plain)
    assert not any("q_norm" in k or "k_norm" in k for k in model.state_dict())
    torch.manual_seed(0)
    normed = Transformer(dataclasses.replace(plain, qk_norm=True))
    extra = set(normed.state_dict()) - set(model.state_dict())
    assert extra == {f"blocks.{i}.attn.{n}_norm.weight" for i in range(plain.n_layer) for n in "qk"}
    assert sum(p.numel() for p in normed.parameters()) == count_params(normed.cfg)
    x = torch.randint(0, 64, (2, 16))
    assert not torch.allclose(model(x), normed(x))  # on, it does change the function


@pytest.mark.parametrize("causal", [True, False])
def test_qk_norm_makes_attention_independent_of_the_query_key_scale(causal):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=causal, qk_norm=True)).eval()
    x = torch.randint(0, 64, (2, 16))
    before = model(x)
    d = model.cfg.d_model
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * d] *= 7.0  # queries and keys only
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_qk_norm_keeps_ar_causal_and_padding_inert():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=True, qk_norm=True)).eval()
    x = torch.randint(0, 64, (2, 16))
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % 64
    assert torch.equal(model(x)[:, :9], model(y)[:, :9])
    padded = torch.cat([x[:, :10], torch.full((2, 6), 3)], dim=1)
    keep = torch.arange(16)[None] < 10
    torch.testing.assert_close(model(padded, key_padding_mask=keep)[:, :10], model(x[:, :10]), atol=1e-5, rtol=1e-5)


def test_qk_norm_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=64, seq_len=16, causal=False, qk_norm=True)).eval()
    save_model(model, tmp_path / "last.safetensors")
    loaded = load_model(tmp_path / "last.safetensors")
    assert loaded.cfg.qk_norm
    x = torch.randint(0, 64, (3, 16))
    assert torch.equal(model(x), loaded(x))
