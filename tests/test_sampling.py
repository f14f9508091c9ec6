"""The demo's samplers: exact categorical sampling, MDM commit schedule, committed tokens frozen."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import chisquare
from torch import nn

from unmask.config import ModelConfig
from unmask.model import Transformer
from unmask.sampling import generate_ar, generate_mdm, sample_categorical
from unmask.sampling.mdm import commit_schedule


def test_gumbel_max_matches_softmax_at_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    n, temperature = 40_000, 0.7
    draws = sample_categorical(logits.expand(n, -1), temperature, torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=5)
    expected = torch.softmax(logits.double() / temperature, -1).numpy() * n
    assert chisquare(observed, expected).pvalue > 1e-3


def test_gumbel_noise_is_float64_so_rare_tokens_keep_their_probability(monkeypatch):
    # The largest Gumbel draw is -log(-log(u_max)), u_max the largest float below 1: about 16.6
    # in float32 but 36.7 in float64. A token 25 nats below the top is reachable only in float64.
    def gumbel_max(dtype):
        u_max = torch.tensor(1.0, dtype=dtype).nextafter(torch.tensor(0.0, dtype=dtype)).double()
        return float(-torch.log(-torch.log(u_max)))

    assert gumbel_max(torch.float32) < 25 < gumbel_max(torch.float64)
    dtypes = []
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: dtypes.append(k.get("dtype")) or real_rand(*a, **k))
    sample_categorical(torch.zeros(3, 5), 1.0)
    assert dtypes == [torch.float64]


def test_temperature_zero_is_argmax():
    logits = torch.randn(7, 11)
    assert torch.equal(sample_categorical(logits, 0.0), logits.argmax(-1))


def test_commit_schedule_spreads_the_remainder_over_the_first_steps():
    assert commit_schedule(10, 4) == [3, 3, 2, 2]
    assert sum(commit_schedule(48, 7)) == 48


class Recorder(nn.Module):
    """A random bidirectional model that records every input it is given."""

    def __init__(self, vocab: int = 20, seq_len: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.model = Transformer(ModelConfig(size="tiny", vocab_size=vocab, seq_len=seq_len, causal=False))
        self.cfg = self.model.cfg
        self.inputs: list[torch.Tensor] = []

    def forward(self, idx, **kwargs):
        self.inputs.append(idx.clone())
        return self.model(idx, **kwargs)


def test_mdm_commits_the_scheduled_count_and_never_changes_a_committed_token():
    model, mask = Recorder(), 1
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out = generate_mdm(
        model, prompt, gen_len=10, steps=4, mask_id=mask, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    states = model.inputs + [out.tokens]
    for step, k in enumerate(commit_schedule(10, 4)):
        before, after = states[step], states[step + 1]
        newly = (before == mask) & (after != mask)
        assert (newly.sum(1) == k).all()
        kept = before != mask
        assert torch.equal(after[kept], before[kept])  # committed (and prompt) tokens never change
    assert (out.tokens != mask).all() and torch.equal(out.tokens[:, :3], prompt)
    assert out.forward_passes == 4 and len(out.history) == 4


def test_ar_greedy_decoding_extends_the_prompt():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=20, seq_len=8, causal=True)).eval()
    prompt = torch.tensor([[3, 4]])
    out = generate_ar(model, prompt, max_new_tokens=10)  # longer than seq_len: the context is cropped
    assert out.shape == (1, 12) and torch.equal(out[:, :2], prompt)
    expected_first = model(prompt)[:, -1].argmax(-1)
    assert out[0, 2] == expected_first


def test_ar_orderings_runs_decode_with_target_positions_in_the_queries():
    """Greedy decoding of an ar_orderings model must score exactly as its loss does (identity order)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=20, seq_len=8, causal=True)).eval()
    prompt = torch.tensor([[3, 4, 5]])
    out = generate_ar(model, prompt, max_new_tokens=1, query_is_target=True)
    pos = torch.arange(3)[None]
    assert out[0, 3] == model(prompt, pos=pos, query_pos=pos + 1)[0, -1].argmax()
    long = generate_ar(model, prompt, max_new_tokens=10, query_is_target=True)  # crops to seq_len - 1
    assert long.shape == (1, 13)
