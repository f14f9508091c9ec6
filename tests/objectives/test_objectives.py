"""Objectives: the MDM ELBO is what the math says, AR variants predict what they should."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from unmask.config import ModelConfig, TrainConfig
from unmask.model import Transformer, select_positions
from unmask.objectives import (
    OBJECTIVES,
    Batch,
    Specials,
    get_objective,
    make_orderings,
    mask_probability,
    objective_for,
)
from unmask.objectives.ar import ar_loss, ar_orderings_loss
from unmask.objectives.mdm import mdm_loss

V, MASK, PAD = 12, 1, 2
SP = Specials(mask_id=MASK, pad_id=PAD)


def tiny(causal: bool, seq_len: int = 8) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(size="tiny", vocab_size=V, seq_len=seq_len, causal=causal)).eval()


class Tamper(nn.Module):
    """Wraps a model and adds `bump` to chosen logits, to show the loss ignores them."""

    def __init__(self, model, bump_unmasked: float = 0.0, bump_mask_logit: float = 0.0):
        super().__init__()
        self.model, self.bump_unmasked, self.bump_mask_logit = model, bump_unmasked, bump_mask_logit

    def forward(self, idx, output_mask=None, **kwargs):
        logits = self.model(idx, **kwargs).clone()  # every position, so the tampering is real
        unmasked = idx != MASK
        logits[unmasked] += self.bump_unmasked * torch.randn_like(logits[unmasked])
        logits[..., MASK] += self.bump_mask_logit
        return logits if output_mask is None else select_positions(logits, output_mask)


def test_mdm_loss_ignores_unmasked_positions_and_never_predicts_the_mask():
    model = tiny(causal=False)
    x = torch.randint(3, V, (6, 8))
    base = mdm_loss(model, x, SP, torch.Generator().manual_seed(1))
    tampered = mdm_loss(Tamper(model, bump_unmasked=50.0), x, SP, torch.Generator().manual_seed(1))
    huge_mask = mdm_loss(Tamper(model, bump_mask_logit=1e4), x, SP, torch.Generator().manual_seed(1))
    torch.testing.assert_close(tampered.loss_sum, base.loss_sum)
    torch.testing.assert_close(huge_mask.loss_sum, base.loss_sum)
    assert base.n_tokens == x.numel()  # normalised by all real tokens, not only masked ones


def test_stratified_noise_levels_cover_the_unit_interval():
    p = mask_probability(8, 1e-3, torch.Generator().manual_seed(0), "cpu")
    t = ((p - 1e-3) / (1 - 1e-3)).sort().values
    gaps = t.diff()
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 8))  # one t per stratum
    assert p.min() >= 1e-3 and p.max() <= 1


def exact_mdm_elbo(model, x: torch.Tensor, eps: float) -> float:
    """E_t E_mask[(1/L) Σ_masked CE / p] by enumerating all 2^L masks and integrating over t exactly.

    With p = (1-eps) t + eps and k masked tokens, a mask has probability p^k (1-p)^(L-k), so its
    weight is ∫ p^(k-1) (1-p)^(L-k) dt = (1/(1-eps)) ∫_eps^1 p^(k-1) (1-p)^(L-k) dp (binomial expansion).
    """
    L = x.shape[1]

    def weight(k: int) -> float:
        n = L - k
        return sum(math.comb(n, j) * (-1) ** j * (1 - eps ** (k + j)) / (k + j) for j in range(n + 1)) / (1 - eps)

    total = 0.0
    with torch.no_grad():
        for pattern in itertools.product([False, True], repeat=L):
            m = torch.tensor(pattern)
            if not m.any():
                continue
            logits = model(x.masked_fill(m[None], MASK)).double()
            logits[..., MASK] = float("-inf")
            ce = torch.nn.functional.cross_entropy(logits[0][m], x[0][m], reduction="sum")
            total += weight(int(m.sum())) * float(ce)
    return total / L


def test_mdm_loss_is_an_unbiased_estimate_of_the_exact_elbo():
    model = tiny(causal=False, seq_len=5)
    x = torch.randint(3, V, (1, 5))
    exact = exact_mdm_elbo(model, x, eps=1e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = torch.tensor([float(mdm_loss(model, x.expand(256, 5), SP, g, eps=1e-3).loss) for _ in range(60)])
    mean, se = float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))
    print(f"exact ELBO {exact:.4f}, estimate {mean:.4f} ± {se:.4f}")
    assert abs(mean - exact) < 4 * se + 1e-3


def test_ar_loss_is_next_token_cross_entropy():
    model = tiny(causal=True)
    x = torch.randint(3, V, (2, 8))
    out = ar_loss(model, x, SP)
    logits = model(x[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum")
    torch.testing.assert_close(out.loss_sum, expected)
    assert out.n_tokens == 2 * 7


def test_orderings_are_identity_plus_fixed_permutations_keeping_the_first_token():
    orders = make_orderings(4, 10, seed=3)
    assert torch.equal(orders[0], torch.arange(10))
    assert (orders[:, 0] == 0).all()
    for row in orders:
        assert sorted(row.tolist()) == list(range(10))
    assert torch.equal(orders, make_orderings(4, 10, seed=3))
    assert len({tuple(r.tolist()) for r in orders}) == 4


def test_ar_orderings_with_only_the_identity_reads_left_to_right():
    """With one ordering the only change from `ar` is that queries carry the target position."""
    model = tiny(causal=True)
    x = torch.randint(3, V, (2, 8))
    out = ar_orderings_loss(model, x, SP, torch.Generator().manual_seed(0), orderings=make_orderings(1, 8, 0))
    T = 8
    pos = torch.arange(T - 1).expand(2, -1)
    logits = model(x[:, :-1], pos=pos, query_pos=pos + 1)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum")
    torch.testing.assert_close(out.loss_sum, expected)


def test_ar_orderings_has_no_leakage_along_its_ordering():
    """Changing the token read at step j of an ordering changes no prediction made before step j."""
    model = tiny(causal=True)
    orders = make_orderings(2, 8, seed=0)
    perm = orders[1:2]
    x = torch.randint(3, V, (1, 8))
    xp = x.gather(1, perm)
    j = 4
    y = x.clone()
    y[0, perm[0, j]] = (y[0, perm[0, j]] + 1) % V
    yp = y.gather(1, perm)
    a = model(xp[:, :-1], pos=perm[:, :-1], query_pos=perm[:, 1:])
    b = model(yp[:, :-1], pos=perm[:, :-1], query_pos=perm[:, 1:])
    assert torch.equal(a[:, :j], b[:, :j])


@pytest.mark.parametrize("objective", ["ar", "mdm", "ar_orderings"])
def test_token_count_is_known_before_the_forward(objective):
    record = objective_for(TrainConfig.from_flat(objective=objective, n_orderings=3))
    model = tiny(causal=record.causal)
    x = torch.randint(3, V, (3, 8))
    x[2, 5:] = PAD
    out = record.loss(model, Batch(x), SP, torch.Generator().manual_seed(0))
    assert out.n_tokens == record.n_targets(Batch(x), PAD)
    assert torch.isfinite(out.loss_sum)


def test_the_registry_holds_the_three_objectives_and_refuses_unknown_names():
    from unmask.config import ConfigError

    assert set(OBJECTIVES) >= {"ar", "mdm", "ar_orderings"}
    assert [OBJECTIVES[n].causal for n in ("ar", "mdm", "ar_orderings")] == [True, False, True]
    assert [OBJECTIVES[n].exact for n in ("ar", "mdm", "ar_orderings")] == [True, False, True]
    with pytest.raises(ConfigError, match="train.objective='diffusion': must be one of ar, mdm, ar_orderings"):
        get_objective("diffusion")
