"""What every sampler shares: the output record, and the top-k / top-p filter of the logits."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SampleOutput:
    tokens: torch.Tensor
    """(B, P + L) prompt followed by the generated tokens."""
    history: list[list[list[int]]] = field(default_factory=list)
    """Per step, per sequence: the positions committed at that step (their tokens are in `tokens`)."""
    forward_passes: int = 0
    """Denoiser calls over the batch (a cached call over a block counts 1; CFG's two halves count 2)."""
    energy_passes: int = 0
    """EDLM: energy model calls (AR or NCE energy) over the batch's candidates."""


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits (..., V) with the tokens outside the top-k and the top-p nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before a token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits
