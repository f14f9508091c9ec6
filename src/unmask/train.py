"""Deprecated module name: training lives in `unmask.training` (e.g. `from unmask.training import train`)."""

import warnings

from unmask.run import read_metrics  # noqa: F401
from unmask.training import Budget, TrainingError, TrainingStopped, learning_rate, train  # noqa: F401

warnings.warn(
    "unmask.train is now unmask.training: from unmask.training import train", DeprecationWarning, stacklevel=2
)
