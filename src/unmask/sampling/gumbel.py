"""Categorical sampling, exact in float64.

float32 Gumbel noise saturates (−log(−log u) tops out near 16), which silently
lowers the effective temperature and hides entropy collapse; float64 does not.
Temperature 0 means argmax.

`sample_categorical` is Gumbel-max with float64 noise, V draws per row. A sampler
that needs a token at every row together with its probability (MDM low-confidence)
uses `sample_with_confidence` instead: the inverse CDF of one float64 uniform per
row, over float32 terms exp(z) summed in float64 (block sums, then one block) and
certified against their worst-case rounding; the rare draw that falls within that
bound of a token boundary is redone wholly in float64. The law is that of the float64
inverse CDF (the exact softmax up to 2^-53 per token), for one float32 exp per entry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNIT = 2.0**-24  # float32 unit roundoff
BLOCK = 32  # tokens per block of the two-level inverse CDF
EXACT_UP_TO = 1 << 16  # entries (rows x vocabulary) up to which float64 throughout costs less than certifying


def sample_categorical(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Token ids (...) drawn from softmax(logits / temperature) over the last dim."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double() / temperature
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
    return (logits + gumbel).argmax(dim=-1)


def sum_error(V: int, total: torch.Tensor) -> torch.Tensor:
    """A bound on the error of any prefix sum of the float32 terms exp((l_v - l_max) / T), summed in float64.

    Each term is off by at most 2u|z| + 4u relative, z = (l_v - l_max) / T <= 0 (the subtraction and
    the division round by u each, exp by at most 2 ulp), and sum_v |z| e^z <= V / e; summing a block
    in float32 adds at most BLOCK·u of it, the float64 sums ~V·2^-53. So u·(V + (BLOCK + 6)·total)
    bounds it, total >= 1 the row's sum (its top term is exp(0) = 1).
    """
    return UNIT * (V + (BLOCK + 6) * total)


def confidence(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """p(token) (M,) under softmax(logits) (M, V) at temperature 1, in float64."""
    return logits.double().softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)


def inverse_cdf(
    logits: torch.Tensor, temperature: float, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The token x (M,) whose float64 prefix sum of exp((l - l_max) / T) over logits (M, V) first exceeds u
    (M,) of the total; returns (x, its term exp((l_x - l_max) / T), the total), all float64 but x."""
    z = logits.double()
    z = z - z.amax(-1, keepdim=True)
    e = (z if temperature == 1 else z / temperature).exp_()
    cdf = e.cumsum(-1)
    x = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(logits.shape[-1] - 1)
    return x, e.gather(-1, x[:, None])[:, 0], cdf[:, -1]


def sample_with_confidence(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Tokens x (M,) drawn from softmax(logits / temperature) (M, V), and their probability at temperature 1.

    Returns (x, conf, err): the exact p(x) lies within conf ± err (M,) float64, so a caller ranking
    the confidences can tell where float32 is not sure and recompute `confidence` there only; err is
    None when conf is the float64 one already (small inputs, where float64 throughout is cheapest).
    """
    M, V = logits.shape
    logits = logits.float()
    if M * V <= EXACT_UP_TO:  # the same tokens for the same generator state, in fewer operations
        if temperature == 0:
            x = logits.argmax(-1)
            return x, confidence(logits, x), None
        u = torch.rand(M, generator=generator, device=logits.device, dtype=torch.float64)
        x, term, total = inverse_cdf(logits, temperature, u)
        return x, term / total if temperature == 1 else confidence(logits, x), None
    top = logits.amax(-1, keepdim=True)  # (M, 1)
    if temperature == 0:
        x = logits.argmax(-1)
        total = (logits - top).exp_().sum(-1, dtype=torch.float64)  # (M,) >= 1; p(argmax) = 1 / total
        return x, 1 / total, sum_error(V, total) / total**2 + 1e-300
    e = logits - top  # (M, V) <= 0; -inf where banned
    if temperature != 1:
        e.div_(temperature)
    e = e.exp_() if V % BLOCK == 0 else F.pad(e.exp_(), (0, -V % BLOCK))
    e = e.view(M, -1, BLOCK)  # (M, V / BLOCK, BLOCK) float32
    starts = F.pad(e.sum(-1).double().cumsum(-1), (1, 0))  # (M, V / BLOCK + 1) prefix sums at block starts
    total = starts[:, -1]  # (M,)
    u = torch.rand(M, generator=generator, device=logits.device, dtype=torch.float64)
    target = (u * total)[:, None]  # (M, 1) the inverse CDF of u: the first token whose prefix sum exceeds it
    j = (torch.searchsorted(starts, target, right=True) - 1).clamp(0, e.shape[1] - 1)  # (M, 1) its block
    inside = e.gather(1, j[:, :, None].expand(-1, -1, BLOCK))[:, 0].double().cumsum(-1)  # (M, BLOCK)
    inside = F.pad(inside, (1, 0)) + starts.gather(1, j)  # (M, BLOCK + 1) prefix sums inside block j
    k = (torch.searchsorted(inside, target, right=True) - 1).clamp(0, BLOCK - 1)  # (M, 1) its place there
    edges = inside.gather(1, torch.cat([k, k + 1], 1))  # (M, 2) prefix sums before and after the token
    x = (j * BLOCK + k)[:, 0]
    # The exact prefix sums lie within sum_error of these (and the exact target too): with twice
    # that to spare on both sides, the exact inverse CDF picks the same token.
    gap = torch.minimum(target - edges[:, :1], edges[:, 1:] - target)[:, 0]
    sure = gap > 2 * sum_error(V, total)
    if V % BLOCK:
        sure &= x < V
        x = x.clamp_max(V - 1)
    d_x = logits.gather(1, x[:, None])[:, 0].double() - top[:, 0].double()  # (M,) log p(x) + log S at T = 1
    total_1 = total if temperature == 1 else (logits - top).exp_().sum(-1, dtype=torch.float64)
    conf = d_x.exp() / total_1  # p(x) at temperature 1
    err = conf * (sum_error(V, total_1) / total_1 + 1e-12)
    unsure = (~sure).nonzero()[:, 0]
    if len(unsure):  # host sync; rare: redo these rows in float64 with the same uniform
        x64 = inverse_cdf(logits[unsure], temperature, u[unsure])[0]
        x[unsure], conf[unsure], err[unsure] = x64, confidence(logits[unsure], x64), 0.0
    return x, conf, err
