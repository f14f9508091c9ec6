"""Validation: AR and MDM score the same tokens; the MDM count estimator is unbiased and has lower variance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from unmask.config import ModelConfig
from unmask.data.dataset import Sequences
from unmask.model import Transformer
from unmask.objectives import Specials, get_objective
from unmask.objectives.mdm import elbo_pass_sums
from unmask.objectives.validation import validation_loss

V, MASK, PAD = 12, 1, 2
SP = Specials(mask_id=MASK, pad_id=PAD)


def tiny_mdm(seq_len: int = 5) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", vocab_size=V, seq_len=seq_len, causal=False, init_std=0.5)  # far from uniform
    return Transformer(cfg).eval()


def batch() -> torch.Tensor:
    x = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 11, 3], [5, 5, 4, PAD, PAD]])
    return x


@torch.no_grad()
def exact_conditional_elbo(model, x: torch.Tensor) -> float:
    """Σ over rows of Σ_l (1/l) · mean over masks S of size l of Σ_{i∈S} CE_i — every subset enumerated."""
    total = 0.0
    for row in x:
        scoreable = [i for i in range(1, len(row)) if row[i] != PAD]
        L = len(scoreable)
        real = (row != PAD)[None]
        for count in range(1, L + 1):
            subsets = list(itertools.combinations(scoreable, count))
            for subset in subsets:
                x_t = row.clone()
                x_t[list(subset)] = MASK
                logits = model(x_t[None], key_padding_mask=None if bool(real.all()) else real)[0].float()
                logits[:, MASK] = float("-inf")
                ce = F.cross_entropy(logits[list(subset)], row[list(subset)], reduction="sum")
                total += float(ce) / count / len(subsets)
    return total


def t_sampling_pass_sums(model, x: torch.Tensor, passes: int, g: torch.Generator) -> torch.Tensor:
    """The estimator the count estimator replaces: mask each scored token with probability t, weight 1/t."""
    sums = []
    real = x != PAD
    scoreable = real.clone()
    scoreable[:, 0] = False
    for _ in range(passes):
        t = ((torch.rand(1, generator=g) + torch.arange(len(x)) / len(x)) % 1.0).clamp_min(1e-3)  # stratified too
        masked = (torch.rand(x.shape, generator=g) < t[:, None]) & scoreable
        x_t = x.masked_fill(masked, MASK)
        with torch.no_grad():
            logits = model(x_t, key_padding_mask=None if bool(real.all()) else real).float()
        logits[..., MASK] = float("-inf")
        ce = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(x.shape)
        sums.append(float((ce * masked / t[:, None]).sum()))
    return torch.tensor(sums)


def test_the_count_estimator_is_unbiased_against_exact_enumeration_and_has_lower_variance():
    model, x = tiny_mdm(), batch()
    exact = exact_conditional_elbo(model, x)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        counts = elbo_pass_sums(model, [x], 3000, g, SP).double()
    t_draws = t_sampling_pass_sums(model, x, 3000, torch.Generator().manual_seed(1)).double()
    se = float(counts.std() / math.sqrt(len(counts)))
    print(f"exact {exact:.4f}; count estimator {float(counts.mean()):.4f} ± {se:.4f}; "
          f"variance per pass: count {float(counts.var()):.3f} vs t-sampling {float(t_draws.var()):.3f}")  # fmt: skip
    assert abs(float(counts.mean()) - exact) < 4 * se
    assert abs(float(t_draws.mean()) - exact) < 4 * float(t_draws.std() / math.sqrt(len(t_draws)))
    assert float(counts.var()) < 0.5 * float(t_draws.var())


def test_ar_and_mdm_validation_score_the_same_tokens_and_bytes():
    tokens = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 3, 5, 5], dtype=np.int64)
    sequences = Sequences(tokens, 5, PAD)  # 3 sequences, the last one padded
    byte_lengths = np.arange(V, dtype=np.int64) % 3 + 1
    results = {}
    for name in ("ar", "mdm"):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(size="tiny", vocab_size=V, seq_len=5, causal=get_objective(name).causal))
        results[name] = validation_loss(
            model, sequences, get_objective(name), SP, mc_passes=2, byte_lengths=byte_lengths
        )
    assert results["ar"].n_tokens == results["mdm"].n_tokens == len(tokens) - 3  # all but each sequence's first
    assert results["ar"].n_bytes == results["mdm"].n_bytes > 0
