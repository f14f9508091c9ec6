"""What a run writes beside its metrics — final and best weights, checkpoints — and how a resume finds its state
again: kept out of the loop, which only decides when."""

from __future__ import annotations

from pathlib import Path

import torch

from unmask.checkpoint import Checkpoints
from unmask.config import ConfigError, ModelConfig, UnmaskError, os_reason
from unmask.model import count_params, read_weights, save_model
from unmask.run import Run
from unmask.runtime import Runtime
from unmask.training.metrics import truncate_metrics
from unmask.training.state import TrainState


class TrainingError(UnmaskError):
    """The run could not go on (numerical blow-up, disk full); the message names the last good checkpoint."""


class RunSaver:
    """Writes a run's weights (last.safetensors, best.safetensors) and checkpoints; a failed write is one
    TrainingError naming the OS's reason and the last good checkpoint, with no partial file left."""

    def __init__(self, *, out: Path, runtime: Runtime, checkpoints: Checkpoints) -> None:
        self.out, self.runtime, self.checkpoints = out, runtime, checkpoints
        self.resume_hint = f"unmask train --out {out} --resume true"

    def checkpoint(self, state: TrainState) -> None:
        try:
            # last.safetensors first: a kill between the two leaves the previous checkpoint listed, and its
            # resume redoes the step, so the final weights are never older than the newest checkpoint.
            self.save_weights(state.model, "last")
            saved = state.state_dict()  # every process: FSDP2 gathers the shards
            if self.runtime.is_main:
                self.checkpoints.save(state.step, saved)
        except TrainingError:
            raise
        except Exception as e:  # disk full: OSError, or torch.save's RuntimeError from its C++ writer
            raise self._disk_error(f"the checkpoint of step {state.step}", e) from None

    def save_weights(self, model: torch.nn.Module, which: str) -> None:
        weights = self.runtime.full_model_state(model)  # every process: FSDP2 gathers the shards
        if not self.runtime.is_main:
            return
        try:
            save_model(model, self.out / f"{which}.safetensors", weights)
        except Exception as e:  # safetensors raises its own error types on a full disk
            raise self._disk_error(f"{which}.safetensors", e) from None

    def repair_last_weights(self, model: torch.nn.Module) -> None:
        """A finished run resumed: last.safetensors holds the final step's weights (from its checkpoint) again
        if a kill after the last checkpoint left it torn or older."""
        weights = self.runtime.full_model_state(model)
        last = self.out / "last.safetensors"
        if not self.runtime.from_main(self.runtime.is_main and _holds_weights(last, weights)):
            self.save_weights(model, "last")

    def last_good(self) -> str:
        latest = self.checkpoints.latest()
        return (
            f"{self.checkpoints.dir / latest['file']} (step {latest['step']})" if latest else "none (no checkpoint yet)"
        )

    def _disk_error(self, what: str, e: Exception) -> TrainingError:
        for tmp in [*self.out.glob("*.tmp"), *self.checkpoints.dir.glob("*.tmp")]:
            tmp.unlink(missing_ok=True)
        # the OS's own words: torch's zip writer says "unexpected pos" and keeps the OSError as its context
        reason = os_reason(e) or (str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
        return TrainingError(
            f"could not save {what} in {self.out} ({reason}); last good checkpoint: {self.last_good()}; "
            f"free space, then: {self.resume_hint}"
        )


def restore(state: TrainState, checkpoints: Checkpoints, out: Path, first_checkpoint: int) -> None:
    """Load the newest verified checkpoint; refuse to restart a run that made progress but lost them all.

    A run killed before (or while) writing its first checkpoint has none and logged at most
    `first_checkpoint` steps: it starts again from step 0, which, everything being seeded, is the same run.
    """
    loaded = checkpoints.load_latest()
    if loaded is None:
        logged = [r["step"] for r in Run(out).metrics()]
        if logged and max(logged) > first_checkpoint:
            raise ConfigError(
                f"run {out} logged {max(logged)} steps but has no checkpoint to resume from "
                f"(checkpoints/ was deleted?); it cannot continue, start it again with a new --out"
            )
    else:
        state.load_state_dict(*loaded)
    truncate_metrics(out, state.step)  # drop what was logged after the checkpoint


def _holds_weights(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """Does the safetensors file at `path` hold exactly these weights?"""
    try:
        saved = read_weights(path)
    except ConfigError:  # missing or torn: it does not
        return False
    return saved.keys() == state.keys() and all(torch.equal(saved[k], v.cpu()) for k, v in state.items())


def checkpoint_bytes(model_cfg: ModelConfig) -> int:
    """Disk one checkpoint needs: fp32 weights + two AdamW moments, plus last/best safetensors, + 10%."""
    return int(count_params(model_cfg) * 4 * (3 + 2) * 1.1) + (1 << 20)
