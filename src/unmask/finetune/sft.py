"""Supervised fine-tuning of a base run on a prepared instruction folder (`unmask finetune sft`).

The objective follows the base: an MDM base is fine-tuned with sft_mdm (LLaDA's recipe), an AR base
with sft_ar (see unmask.objectives.sft). Everything else is pre-training's loop: the budget (E epochs
over the conversations), one cosine schedule, checkpoints, resume and signals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from unmask.config import SFT_DEFAULTS, ConfigError, TrainConfig
from unmask.run import Run

SFT_OBJECTIVES = {"mdm": "sft_mdm", "ar": "sft_ar"}
"""Base objective → its fine-tuning objective."""


def sft_config(base: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with the objective that fine-tunes `base` and the base as its starting point."""
    run = Run(base)
    objective = SFT_OBJECTIVES.get(run.objective.name)
    if objective is None:
        raise ConfigError(f"run {run.path} was trained with {run.objective.name}; SFT starts from an 'mdm' or 'ar' run")
    return dataclasses.replace(train, objective=objective, init_from=str(run.path.resolve()))


def sft(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
) -> Path:
    """Fine-tune `base` on the instruction folder `data` into the run directory `out`; returns `out`."""
    from unmask.training import train as run_train

    cfg = sft_config(base, train or SFT_DEFAULTS)
    # on resume, a value left at its default is not a change
    defaults = dataclasses.replace(SFT_DEFAULTS, objective=cfg.objective, init_from=cfg.init_from)
    return run_train(data, out, None, cfg, resume=resume, quiet=quiet, tensorboard=tensorboard, defaults=defaults)
