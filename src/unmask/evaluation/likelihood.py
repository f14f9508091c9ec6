"""Validation loss on the held-out split, the same set for every objective.

AR (and ar_orderings, read left to right) give the exact mean NLL per token.
MDM gives the mean per-token ELBO, an *upper bound* on the NLL, averaged over
K Monte Carlo passes whose noise is fixed by a seed so that curves compare; its
standard error is the spread of the K pass means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from unmask.data.dataset import TokenData
from unmask.objectives import OBJECTIVES, Specials


@dataclass
class ValidationLoss:
    loss: float
    """Mean per-token NLL (AR) or ELBO (MDM), nats."""
    stderr: float | None
    """Standard error over MC passes (MDM); None for an exact NLL."""
    n_tokens: int
    passes: int
    kind: str
    """'NLL' or 'ELBO (upper bound on NLL)'."""

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    data: TokenData,
    objective: str,
    mc_passes: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    orderings: torch.Tensor | None = None,
    mdm_eps: float = 1e-3,
    autocast: bool = False,
) -> ValidationLoss:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sp = Specials(mask_id=data.mask_id, pad_id=data.pad_id)
    kwargs = {"orderings": orderings[:1]} if objective == "ar_orderings" else {}  # identity: left to right
    if objective == "mdm":
        kwargs["eps"] = mdm_eps
    passes = mc_passes if objective == "mdm" else 1
    n_seq = data.n_sequences("val")
    pass_means, n_tokens = [], 0
    for k in range(passes):
        generator = torch.Generator(device).manual_seed(seed + k)
        total, n_tokens = torch.zeros((), device=device), 0
        for start in range(0, n_seq, batch_size):
            x = data.batch("val", np.arange(start, min(start + batch_size, n_seq))).to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                out = OBJECTIVES[objective](model, x, sp, generator, **kwargs)
            total += out.loss_sum
            n_tokens += out.n_tokens
        pass_means.append(total.item() / max(n_tokens, 1))  # host-device sync: once per pass
    model.train(was_training)
    mean = float(np.mean(pass_means))
    stderr = float(np.std(pass_means, ddof=1) / math.sqrt(passes)) if passes > 1 else None
    kind = "ELBO (upper bound on NLL)" if objective == "mdm" else "NLL"
    return ValidationLoss(mean, stderr, n_tokens, passes, kind)
