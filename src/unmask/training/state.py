"""TrainState: the resumable state of a run, and the format of its checkpoints.

A checkpoint holds the model and AdamW state (consolidated: the format of one process, whatever
the number of processes that wrote it), the step, the data position (epoch and index, recorded to
verify: epoch orders are a pure function of (epoch, seed)), the CPU and CUDA RNGs (dropout), the
best validation loss so far, skipped steps and tokens seen. The learning rate and the objective's
noise are pure functions of the step (see `noise_seed`) and are not stored.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from unmask.config import ConfigError
from unmask.runtime import Runtime


def noise_seed(seed: int, step: int, micro_batch: int) -> int:
    """The seed of the objective's noise (MDM masks, ordering picks) for one micro-batch of one step.

    A pure function of (seed, step, micro-batch index within the global batch), so the noise of a
    micro-batch does not depend on which process draws it, nor on resuming.
    """
    digest = hashlib.blake2b(f"{seed}/{step}/{micro_batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
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
        """The checkpoint (complete on rank 0; every rank must call it: FSDP2 gathers the shards)."""
        device = self.runtime.device
        return {
            "step": self.step,
            "model": self.runtime.full_model_state(self.model),
            "optimizer": self.runtime.full_optimizer_state(self.model, self.optimizer),
            "data_position": self.data_position(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,  # dropout on the GPU
            "best_val": self.best_val,
            "skipped_steps": self.skipped_steps,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore everything; a checkpoint of another run (other shapes, other data position) is refused."""
        try:
            self.runtime.load_full_state_dicts(self.model, self.optimizer, state["model"], state["optimizer"])
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
        if state.get("cuda_rng") is not None and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.runtime.device)
        self.step, self.best_val = step, state["best_val"]
        self.skipped_steps, self.tokens_seen = state["skipped_steps"], state["tokens_seen"]
        self.train_seconds = float(state.get("train_seconds", 0.0))  # absent in checkpoints of older versions
