"""Rejective fine-tuning (R2FT, arXiv 2509.15188): the rejected continuations and the preference loss.

An example starts from an SFT conversation: cut inside the answer at c; the model input is the
sequence up to c followed by masks only (the far positions of a long decoding window, not random
masking). The winner is the true continuation; the rejected one repeats a short phrase — the
1-14 tokens just before c — tiled over a 30-49-token span, with an end-of-text token at a random
place inside it (the authors' rule), or, optionally, the true continuation with frequent
"high-prior" tokens substituted at some rate. The loss is reference-free (SimPO-like):

    −log σ(β_w · mean log p(winner) − β_l · mean log p(rejected) − γ) − β_a · mean log p(winner)

with the means over each continuation's tokens, β_w = β_l = 1, β_a = 0.1, γ = 0 by default.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F


def repeated_phrase(prefix: list[int], span: int, eos_id: int, rng: random.Random, max_phrase: int = 14) -> list[int]:
    """The authors' rejected continuation: the last k ∈ [1, min(max_phrase, len(prefix))] tokens of the prefix
    tiled over `span` tokens, one of them (at a random place) replaced by end-of-text."""
    if not prefix:
        raise ValueError("a repeated phrase needs a non-empty prefix to repeat")
    k = rng.randint(1, min(max_phrase, len(prefix)))
    phrase = prefix[-k:]
    tiled = (phrase * (span // k + 1))[:span]
    tiled[rng.randrange(span)] = eos_id
    return tiled


def high_prior_filler(
    continuation: list[int], frequent: list[int], weights: list[float], rate: float, rng: random.Random
) -> list[int]:
    """The optional rule: each token of the true continuation replaced, with probability `rate`, by a frequent
    token drawn in proportion to its corpus count (`weights`)."""
    return [rng.choices(frequent, weights)[0] if rng.random() < rate else t for t in continuation]


def continuation_logp(
    model: torch.nn.Module, inputs: torch.Tensor, region: torch.Tensor, targets: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """Mean log p(targets) (B,) over each row's region under the denoiser, from one forward of `inputs`
    (the prefix, then masks over the region): the factorised MDM likelihood of a continuation.

    inputs, targets: (B, T) token ids; region: (B, T) bool, the continuation's positions (masked in inputs).
    """
    logits = model(inputs, output_mask=region).float()  # (M, V) at the region's positions, row-major
    logits[:, mask_id] = float("-inf")  # the data never holds the mask token
    logp = logits.log_softmax(-1).gather(-1, targets[region][:, None]).squeeze(-1)  # (M,)
    rows = region.nonzero()[:, 0]
    sums = torch.zeros(len(inputs), device=inputs.device).index_add_(0, rows, logp)
    return sums / region.sum(1).clamp_min(1)


def r2ft_loss(
    logp_winner: torch.Tensor,
    logp_rejected: torch.Tensor,
    beta_w: float = 1.0,
    beta_l: float = 1.0,
    beta_a: float = 0.1,
    gamma: float = 0.0,
) -> torch.Tensor:
    """The per-example preference loss (B,) from the mean log-probabilities of winner and rejected (B,)."""
    return -F.logsigmoid(beta_w * logp_winner - beta_l * logp_rejected - gamma) - beta_a * logp_winner
