"""EDLM's energy model trained by noise-contrastive estimation (arXiv 2410.21357): the loss.

The energy E(x0, x_t) is a scalar per sequence, lower = more likely; the sampler weights candidates by
softmax(−E / τ). NCE pushes the data's energy down and the frozen diffusion model's own samples' up:

    L = −log σ(−E(x0 from the data)) − log σ(E(x0 drawn from p_θ(· | x_t)))

Energies in, never probabilities: passing log p where −E is meant flips or rescales the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nce_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor) -> torch.Tensor:
    """Mean NCE loss over a batch of data energies (B,) and model-sample energies (B,)."""
    return (-F.logsigmoid(-energy_data) - F.logsigmoid(energy_samples)).mean()
