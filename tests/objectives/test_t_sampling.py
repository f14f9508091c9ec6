"""Mask-rate sampling for MDM training: mid-range (Beta-mixture) t with its importance weight is still an unbiased
ELBO estimate (checked against exact enumeration on a tiny model, its variance reported), clipped t is a truncated
bound, and the default is the uniform t of before, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tests.objectives.test_objectives import SP, V, exact_mdm_elbo, tiny
from unmask.config import ConfigError, MdmConfig
from unmask.objectives.mdm import mask_probability, mdm_loss, noise_levels


def draws(model, x: torch.Tensor, n: int = 60, **options) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return torch.tensor([float(mdm_loss(model, x.expand(256, 5), SP, g, 1e-3, **options).loss) for _ in range(n)])


def test_beta_t_with_its_importance_weight_gives_the_exact_elbo_and_its_variance_is_reported():
    model = tiny(causal=False, seq_len=5)
    x = torch.randint(3, V, (1, 5), generator=torch.Generator().manual_seed(3))
    exact = exact_mdm_elbo(model, x, eps=1e-3)
    uniform, beta = draws(model, x), draws(model, x, t_beta=(3.0, 3.0))
    for name, d in (("uniform t", uniform), ("Beta(3,3) + 10% uniform", beta)):
        mean, se = float(d.mean()), float(d.std() / math.sqrt(len(d)))
        print(f"{name}: estimate {mean:.4f} ± {se:.4f} (exact {exact:.4f}); variance of a 256-row batch {d.var():.5f}")
        assert abs(mean - exact) < 4 * se + 1e-3
    assert math.isfinite(float(beta.var()))


def test_beta_t_is_drawn_from_the_mixture_and_weighted_by_its_density():
    g = torch.Generator().manual_seed(0)
    t_all, w_all, p_all = [], [], []
    for _ in range(20):
        p, w = noise_levels(512, 1e-3, g, "cpu", t_beta=(3.0, 3.0), beta_mix=0.1)
        t_all.append((p.double() - 1e-3) / (1 - 1e-3))
        w_all.append(w.double())
        p_all.append(p.double())
    t, w, p = (torch.cat(v).numpy() for v in (t_all, w_all, p_all))

    def mixture_cdf(v):
        return 0.9 * stats.beta.cdf(v, 3, 3) + 0.1 * np.clip(v, 0, 1)

    assert stats.kstest(t, mixture_cdf).pvalue > 0.01
    density = 0.9 * stats.beta.pdf(t, 3, 3) + 0.1
    np.testing.assert_allclose(w * p * density, 1.0, rtol=1e-5)
    assert w.max() <= 1 / (1e-3 * 0.1) + 1  # bounded by the uniform share


def test_clipped_t_is_a_truncated_bound_below_the_full_elbo():
    model = tiny(causal=False, seq_len=5)
    x = torch.randint(3, V, (1, 5), generator=torch.Generator().manual_seed(3))
    exact = exact_mdm_elbo(model, x, eps=1e-3)
    clipped = draws(model, x, n=30, t_min=0.2)
    assert float(clipped.mean()) < exact  # it leaves out the t < 0.2 part of the integral
    p, _ = noise_levels(64, 1e-3, torch.Generator().manual_seed(0), "cpu", t_min=0.2)
    assert float(p.min()) >= 0.2 * (1 - 1e-3) + 1e-3 - 1e-6


def test_the_default_is_uniform_t_bit_for_bit():
    p, w = noise_levels(16, 1e-3, torch.Generator().manual_seed(5), "cpu")
    q = mask_probability(16, 1e-3, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(p, q) and torch.equal(w, 1.0 / q)


@pytest.mark.parametrize(
    "options",
    [dict(t_min=1.0), dict(t_min=-0.1), dict(t_beta=[1.0]), dict(t_beta=[0.0, 2.0]),
     dict(t_beta=[2.0, math.inf]), dict(t_beta=[2.0, 2.0], t_min=0.1), dict(t_beta_mix=0.0)],
)  # fmt: skip
def test_bad_t_sampling_options_are_refused(options):
    with pytest.raises(ConfigError, match=r"train\.mdm\.t_"):
        MdmConfig(**options)
