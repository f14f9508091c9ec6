"""The exact budget of a run, its one cosine schedule, and AdamW.

One run = one (model, U, E): exactly E·U training tokens, a fresh shuffle of the same
sequences each epoch, and one cosine schedule spanning the whole run (linear warm-up,
decay to min_lr_ratio of the peak). An intermediate checkpoint of a longer run is not the
same experiment, so each epoch count is its own run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unmask.config import OptimConfig, TrainConfig


@dataclass
class Budget:
    """The exact budget of a run, derived from the data and recorded in budget.json."""

    unique_tokens: int
    epochs: int
    seq_len: int
    n_sequences: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    tokens_to_see: int

    @classmethod
    def of(cls, data, cfg: TrainConfig) -> Budget:
        """The budget of training `cfg` on `data` (a TokenData: its train split)."""
        n_seq = data.n_sequences("train")
        steps_per_epoch = -(-n_seq // cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        warmup = (
            min(cfg.optim.warmup_steps, total)
            if cfg.optim.warmup_steps
            else max(1, round(cfg.optim.warmup_frac * total))
        )
        return cls(
            unique_tokens=data.n_tokens("train"),
            epochs=cfg.epochs,
            seq_len=data.seq_len,
            n_sequences=n_seq,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            warmup_steps=warmup,
            tokens_to_see=data.n_tokens("train") * cfg.epochs,
        )


def decay_start(budget: Budget, optim: OptimConfig) -> int:
    """The step the learning rate starts to fall: after warm-up (cosine), or the last decay_frac of the run (WSD)."""
    if optim.schedule == "wsd":
        return max(budget.warmup_steps, budget.total_steps - max(1, round(optim.decay_frac * budget.total_steps)))
    return budget.warmup_steps


def learning_rate(step: int, budget: Budget, optim: OptimConfig) -> float:
    """Linear warm-up, then one cosine from lr to lr·min_lr_ratio over the rest of the run (WSD: the peak until
    decay_start, the cosine after it)."""
    if step < budget.warmup_steps:
        return optim.lr * (step + 1) / budget.warmup_steps
    start = decay_start(budget, optim)
    if step < start:
        return optim.lr
    progress = (step - start) / max(1, budget.total_steps - start)
    low = optim.lr * optim.min_lr_ratio
    return low + (optim.lr - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embedding included) but not on norm weights."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused (one kernel per parameter group, on GPUs and CPUs: 3x faster than foreach on the CPU); foreach elsewhere.
    fused = all(p.device.type in ("cuda", "cpu") for p in model.parameters())
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), fused=fused, foreach=not fused)
