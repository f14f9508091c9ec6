"""TrainState: the resumable state of a run, and the format of its checkpoints.

A checkpoint holds the model and AdamW state, the step, the data position (epoch and index,
recorded to verify: epoch orders are a pure function of (epoch, seed)), every RNG (CPU, CUDA,
the objective's noise generator), the best validation loss so far, skipped steps and tokens
seen. The learning rate is a pure function of the step and is not stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from unmask.config import ConfigError


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    """The objective's noise (MDM masks, ordering picks)."""
    steps_per_epoch: int
    shuffle_seed: int
    step: int = 0
    best_val: float = math.inf
    skipped_steps: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    """Wall time spent in optimiser steps, summed over resumes (validation and checkpoints excluded)."""

    def data_position(self, step: int | None = None) -> dict[str, int]:
        step = self.step if step is None else step
        return {
            "epoch": step // self.steps_per_epoch,
            "index": step % self.steps_per_epoch,
            "shuffle_seed": self.shuffle_seed,
        }

    def state_dict(self) -> dict[str, Any]:
        cuda = self.generator.device.type == "cuda"
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_position": self.data_position(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.generator.device) if cuda else None,  # dropout on the GPU
            "generator": self.generator.get_state().cpu(),
            "best_val": self.best_val,
            "skipped_steps": self.skipped_steps,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore everything; a checkpoint of another run (other shapes, other data position) is refused."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ConfigError(
                f"{source} does not match this run ({type(e).__name__}); it belongs to another run"
            ) from None
        if state.get("data_position") != self.data_position(step):
            raise ConfigError(
                f"{source} was saved at data position {state.get('data_position')}, not {self.data_position(step)}"
            )
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"].to(self.generator.get_state().device))
        if state.get("cuda_rng") is not None and self.generator.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.generator.device)
        self.step, self.best_val = step, state["best_val"]
        self.skipped_steps, self.tokens_seen = state["skipped_steps"], state["tokens_seen"]
        self.train_seconds = float(state.get("train_seconds", 0.0))  # absent in checkpoints of older versions
