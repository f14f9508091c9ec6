"""One optimiser step as two functions of their inputs: the trainer runs them, `unmask bench train` times them and
`unmask bench memory` traces them, so the benchmarks measure the step that training takes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from unmask.objectives import Batch, LossOutput, Specials
from unmask.runtime import Runtime
from unmask.training.state import noise_seed

LossFn = Callable[[torch.nn.Module, Batch, Specials, torch.Generator], LossOutput]


def accumulate_gradients(
    *,
    model: torch.nn.Module,
    micro_batches: Sequence[tuple[int, float, Batch]],
    loss_fn: LossFn,
    specials: Specials,
    generator: torch.Generator,
    runtime: Runtime,
    seed: int,
    step: int,
    n_step: int,
) -> torch.Tensor:
    """Forward and backward over this process's micro-batches (k, weight, batch) of the global batch of `step`;
    returns their weighted loss sum (a tensor on the device: reading it waits for the device).

    Micro-batch k's noise is seeded by (seed, step, k) and every gradient is divided by n_step, the global batch's
    loss targets: the same gradients on any number of processes and micro-batches."""
    loss_sum = torch.zeros((), device=runtime.device)
    for j, (k, weight, batch) in enumerate(micro_batches):
        generator.manual_seed(noise_seed(seed, step, k))
        with runtime.no_grad_sync(model, last=j == len(micro_batches) - 1):
            with runtime.autocast():
                out = loss_fn(model, batch, specials, generator)
            # DDP and FSDP2 average gradients over processes; scaling by world makes the sum exact.
            (out.loss_sum * (weight * runtime.world_size / n_step)).backward()
        loss_sum += out.loss_sum.detach() * weight
    return loss_sum


def apply_update(
    *, parameters: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer, grad_clip: float,
    loss: float | None,
) -> tuple[torch.Tensor, bool]:  # fmt: skip
    """Clip the gradients (grad_clip 0: none) and step the optimiser unless the loss or gradient is non-finite, so
    the weights and Adam moments stay clean; zero the gradients. Returns (gradient norm, stepped).

    loss None: no check (a step traced on fake tensors, whose values cannot be read)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip or float("inf"))
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
    finite = loss is None or (math.isfinite(loss) and bool(torch.isfinite(grad_norm)))
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, finite
