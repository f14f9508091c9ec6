"""Training: the loop shared by every objective (loop.py), its optimiser step (step.py), budgets and schedules
(optim.py), the resumable state (state.py), weights and checkpoints on disk (saving.py), metrics (metrics.py), stop
signals (signals.py), run directories (rundir.py)."""

from unmask.training.loop import Hook, StepInfo, Trainer, train
from unmask.training.optim import Budget, learning_rate, make_optimizer
from unmask.training.saving import TrainingError, checkpoint_bytes
from unmask.training.signals import TrainingStopped
from unmask.training.state import TrainState

__all__ = [
    "Budget",
    "Hook",
    "StepInfo",
    "TrainState",
    "Trainer",
    "TrainingError",
    "TrainingStopped",
    "checkpoint_bytes",
    "learning_rate",
    "make_optimizer",
    "train",
]
