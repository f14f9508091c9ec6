"""Categorical sampling by Gumbel-max in float64.

float32 Gumbel noise saturates (−log(−log u) tops out near 16), which silently
lowers the effective temperature and hides entropy collapse; float64 does not.
Temperature 0 means argmax.
"""

from __future__ import annotations

import torch


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
