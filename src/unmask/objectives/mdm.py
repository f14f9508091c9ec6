"""Masked diffusion (MDLM / LLaDA): the ELBO as a training loss and as a batched validation estimator.

`masked_token_ce` is the one masked cross-entropy core; the training loss and the K-pass
validation ELBO both call it. The noise of the two ELBO estimators, `mask_rate` (a noise level t,
weight 1/p) and `count_masks` (LLaDA's count l, weight L/l), is drawn here for validation and for
zero-shot scoring (unmask.evaluation.conditional) alike.
"""

from __future__ import annotations

import torch

from unmask.config import ConfigError, MdmConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.base import LossOutput, Objective, Specials, padding, token_cross_entropy
from unmask.runtime import model_device, to_device


def mask_probability(
    B: int, eps: float, generator: torch.Generator | None, device, passes: int | None = None
) -> torch.Tensor:
    """Stratified noise levels: t_b = (u + b/B) mod 1, p_b = (1 - eps) t_b + eps. Shape (B,).

    Each t_b is marginally U(0, 1), so the ELBO estimate stays unbiased while the batch
    covers the noise range evenly (lower variance than i.i.d. draws). With `passes` = K,
    K independent stratified sets, one u per pass: shape (K, B) (batched MC evaluation).
    """
    u = torch.rand(() if passes is None else (passes, 1), generator=generator, device=device)
    t = (u + torch.arange(B, device=device) / B) % 1.0
    return mask_rate(t, eps)


def mask_rate(t: torch.Tensor, eps: float) -> torch.Tensor:
    """p = (1 − eps)·t + eps: the mask probability at noise level t, never 0, so the weight 1/p stays bounded."""
    return (1 - eps) * t + eps


def count_masks(L: torch.Tensor | int, u: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise of LLaDA's count estimator (2502.09992 eq. 6): (masked (..., n, T), weight (..., n)).

    Draw i of n masks exactly l_i positions, those of its smallest keys (..., n, T), and weighs their
    cross-entropies by L/l_i; l_i = 1 + ⌊L·((u + i/n) mod 1)⌋ ∈ 1..L is stratified over the n draws (u: a uniform,
    () or (..., 1)). Uniform keys choose a uniformly random set; keys above 1 (positions that cannot be masked)
    are chosen last. L: the positions that can be masked, an int or one per draw (n,); L = 0 weighs 0.
    Since ∫₀¹ (1/t) P(l masked | t) dt = 1/l, the expectation is the ELBO of the noise-level estimator.
    """
    n = keys.shape[-2]
    stratum = (u + torch.arange(n, device=u.device, dtype=u.dtype) / n) % 1.0  # (..., n)
    count = torch.minimum(1 + (L * stratum).long(), torch.as_tensor(L, device=u.device).clamp_min(1))
    rank = keys.argsort(-1).argsort(-1)  # each position's place in its draw's random order
    return rank < count[..., None], L / count.to(u.dtype)


def noise_levels(
    B: int,
    eps: float,
    generator: torch.Generator | None,
    device,
    t_min: float = 0.0,
    t_beta: tuple = (),
    beta_mix: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, row_weight), each (B,): mask probabilities and the weight of each sequence's masked CEs.

    Default (t ~ U(0, 1), stratified): weight 1/p, the ELBO. `t_beta` = (a, b): t from the mixture
    m = (1 − beta_mix)·Beta(a, b) + beta_mix·U(0, 1) (more sequences at mid-range mask rates for a, b > 1), weight
    1/(p·m(t)): E_m[g(t)/m(t)] = ∫₀¹ g(t) dt, so the loss stays an unbiased ELBO estimate. The uniform share keeps
    the weight below 1/(p·beta_mix): with Beta alone it is unbounded near t = 0 and 1 and its variance infinite.
    `t_min` > 0: t ~ U(t_min, 1), weight (1 − t_min)/p — the ELBO without its t < t_min part (a truncated bound;
    validation never uses these options and reports the full ELBO).
    """
    if not t_beta and not t_min:
        p = mask_probability(B, eps, generator, device)
        return p, 1.0 / p
    u = torch.rand((), generator=generator, device=device)
    u = ((u + torch.arange(B, device=device) / B) % 1.0).double()  # stratified, as the default
    if t_beta:
        from scipy import special, stats

        a, b = t_beta
        uniform_row = torch.rand(B, generator=generator, device=device) < beta_mix
        from_beta = torch.from_numpy(special.betaincinv(a, b, u.cpu().numpy())).to(device)  # float64 inverse CDF
        t = torch.where(uniform_row, u, from_beta)
        density = (1 - beta_mix) * torch.from_numpy(stats.beta.pdf(t.cpu().numpy(), a, b)).to(device) + beta_mix
    else:
        t = t_min + (1 - t_min) * u
        density = torch.full_like(t, 1.0 / (1 - t_min))
    p = mask_rate(t, eps)
    return p.float(), (1.0 / (p * density)).float()


def masked_token_ce(
    model: torch.nn.Module,
    x: torch.Tensor,
    masked: torch.Tensor,
    row_weight: torch.Tensor,
    mask_id: int,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted CE (M,) on the model's device, row of each (M,) on x's) at the M masked positions of x (B, T).

    The masked tokens are replaced by mask_id, the model predicts the clean token at each
    (no shift), the mask id excluded from its output, and each CE is scaled by row_weight (B,)
    of its sequence (1/p_b). Unmasked positions carry over their value and cost nothing.
    Which positions, their targets and weights are worked out where x lives, then moved to the model's
    device: from a host batch (training) the step never waits for the device to learn M.
    """
    at = masked.flatten().nonzero().squeeze(1)  # (M,) flat positions, row-major
    row = at // x.shape[1]
    device = model_device(model)
    x_t, at_d, targets, weight = (
        to_device(t, device) for t in (x.masked_fill(masked, mask_id), at, x.flatten()[at], row_weight[row])
    )
    kpm = None if key_padding_mask is None else to_device(key_padding_mask, device)
    logits = model(x_t, key_padding_mask=kpm, output_mask=at_d)  # (M, V)
    # the clean data never contains the mask token
    return token_cross_entropy(model, logits, targets, excluded_id=mask_id) * weight, row


def mdm_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    sp: Specials,
    generator=None,
    eps: float = 1e-3,
    t_min: float = 0.0,
    t_beta: tuple = (),
    beta_mix: float = 0.1,
) -> LossOutput:
    """Masked-diffusion ELBO (MDLM / LLaDA), one noise level per sequence.

    L = (1/N) Σ_b Σ_i m_bi · CE(x_bi, f(x_t)_bi) / p_b, N = number of real tokens.

    1. p_b from stratified t, 2. mask each real token with probability p_b,
    3. predict the clean tokens at the masked positions, 4. weight by 1/p_b (other t-samplings: noise_levels).
    Steps 1-2 happen where x lives (training: the host, with a host generator), the forward on the model's device.
    """
    B, T = x.shape
    real, kpm = padding(x, sp.pad_id)
    p, weight = noise_levels(B, eps, generator, x.device, t_min, t_beta, beta_mix)  # (B,) each
    masked = (torch.rand(B, T, generator=generator, device=x.device) < p[:, None]) & real  # (B, T)
    ce, _ = masked_token_ce(model, x, masked, weight, sp.mask_id, kpm)
    return LossOutput(ce.sum(), real)


def elbo_pass_sums(
    model: torch.nn.Module,
    batches,
    passes: int,
    generator: torch.Generator,
    sp: Specials,
    max_batch_tokens: int = 16_384,
) -> torch.Tensor:
    """(K,) summed weighted CE of each of K MC passes over `batches` (CPU (B, T) tensors): the ELBO of
    every real token but the first of each sequence, given the first (the tokens AR scores).

    The count estimator (`count_masks`) instead of sampling a noise level: with L scored tokens in a
    sequence, draw a count l ∈ {1..L}, mask exactly l of them uniformly, and weight the masked
    cross-entropies by L/l: the same expectation, lower variance (no pass masks nothing, no weight
    exceeds L). Pass k stratifies l across the batch: l_kb = 1 + ⌊L_b · ((u_k + b/B) mod 1)⌋. Row
    r = k·B + b; forwards of at most max_batch_tokens tokens.
    """
    device = next(model.parameters()).device
    K = passes
    sums = torch.zeros(K, device=device)
    for x in batches:
        B, T = x.shape
        real = x != sp.pad_id
        scoreable = real.clone()
        scoreable[:, 0] = False  # the first token is context, never masked: AR cannot predict it either
        kpm = None if bool(real.all()) else real.to(device).repeat(K, 1)  # (K·B, T); no device sync (CPU tensor)
        x, scoreable = x.to(device), scoreable.to(device)
        L = scoreable.sum(1)  # (B,)
        u = torch.rand(K, 1, generator=generator, device=device)
        keys = torch.rand(K, B, T, generator=generator, device=device).masked_fill(~scoreable, 2.0)
        masked, weight = count_masks(L, u, keys)  # (K, B, T) exactly l_kb positions, (K, B) L/l float32
        masked &= scoreable  # a sequence with nothing to score (L = 0, weight 0) masks nothing
        masked, weight = masked.flatten(0, 1), weight.flatten()  # (K·B, T), (K·B,)
        xk = x.repeat(K, 1)  # (K·B, T)
        rows = max(1, max_batch_tokens // T)
        for s in range(0, K * B, rows):
            m = masked[s : s + rows]
            ce, row = masked_token_ce(
                model, xk[s : s + rows], m, weight[s : s + rows], sp.mask_id, None if kpm is None else kpm[s : s + rows]
            )
            sums.index_add_(0, (row + s) // B, ce)
    return sums


class MDM(Objective):
    """Masked diffusion's ELBO; options: train.mdm (the noise of the training ELBO)."""

    name, causal, exact, decoder = "mdm", False, False, "mdm"
    host_batches = True
    scores_first_token = False

    def __init__(self, options: MdmConfig | None = None):
        self.options = options or MdmConfig()

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> MDM:
        return cls(cfg.mdm)

    def loss(self, model, batch: Batch, sp, generator=None) -> LossOutput:
        o = self.options
        return mdm_loss(model, batch.tokens, sp, generator, o.eps, o.t_min, tuple(o.t_beta), o.t_beta_mix)

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        """MDM predicts every real token."""
        return int((batch.tokens != pad_id).sum())

    def validation_passes(self, model, batches, passes, generator, sp, max_batch_tokens) -> torch.Tensor:
        """The batched count estimator of the ELBO (elbo_pass_sums), never the training noise's options."""
        return elbo_pass_sums(model, [b.tokens for b in batches], passes, generator, sp, max_batch_tokens)


class MDMAdapt(MDM):
    """MDM's loss on an AR run's weights: AR -> diffusion adaptation (Dream: bidirectional attention, shifted
    logits)."""

    name = "mdm_adapt"
    from_ar = True

    def check_base(self, base) -> None:
        if base is not None and base.objective.name != "ar":
            raise ConfigError(
                f"run {base.path} was trained with {base.objective.name}; adaptation starts from an 'ar' run"
            )


def guided_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    uncond: torch.Tensor,
    output_mask: torch.Tensor,
    scale: float,
    pos: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unsupervised classifier-free guidance (LLaDA, arXiv 2502.09992): u + (1 + w)(c − u), float32 (M, V).

    c: logits given x (B, T); u: given `uncond`, x with its prompt replaced by mask tokens. Both in
    one forward of 2B rows; pos / key_padding_mask (B, T) apply to both halves.
    """

    def twice(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.cat([t, t])

    both = model(
        torch.cat([x, uncond]), pos=twice(pos), key_padding_mask=twice(key_padding_mask), output_mask=twice(output_mask)
    ).float()  # (2M, V)
    c, u = both.chunk(2)
    return u + (1 + scale) * (c - u)
