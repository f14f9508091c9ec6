"""Supervised fine-tuning of a base run on a prepared instruction folder (`unmask finetune sft`).

The objective follows the base: an MDM base is fine-tuned with sft_mdm (LLaDA's recipe), an AR base
with sft_ar (see unmask.objectives.sft). Everything else is pre-training's loop: the budget (E epochs
over the conversations), one cosine schedule, checkpoints, resume and signals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from unmask.config import SFT_DEFAULTS, ConfigError, TrainConfig
from unmask.objectives import get_objective
from unmask.run import Run


def sft_config(base: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with the objective that fine-tunes `base` (sft_ar for a causal one) and the base as its starting
    point."""
    return finetuning_config("sft_ar" if Run(base).objective.causal else "sft_mdm", base, train)


def finetuning_config(objective: str, base: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with `objective` and the run `base` as its starting point, once the objective accepts that base
    (Objective.check_base: one line naming the base and the fix)."""
    run = Run(base)
    get_objective(objective).check_base(run)
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
    return run_finetuning(base, data, out, train, resume, quiet, tensorboard, SFT_DEFAULTS,
                          lambda cfg: sft_config(base, cfg))  # fmt: skip


def run_finetuning(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    train: TrainConfig | None,
    resume: bool,
    quiet: bool,
    tensorboard: bool,
    defaults: TrainConfig,
    make_config: Callable[[TrainConfig], TrainConfig],
) -> Path:
    """A fine-tuning run of `base`: started with make_config(train or the command's defaults), or resumed from
    what it saved (objective, base, options: the base path is checked, the base itself is not needed)."""
    from unmask.training import train as run_train

    if resume:
        check_resumes_its_base(base, out)
        return run_train(None, out, None, train, resume=True, quiet=quiet, tensorboard=tensorboard, defaults=defaults)
    return run_train(data, out, None, make_config(train or defaults), quiet=quiet, tensorboard=tensorboard)


def check_resumes_its_base(base: str | Path, out: str | Path) -> None:
    """A run is resumed with the base it was started from (by path: the base itself may be gone by now)."""
    if not (Path(out) / "config.json").is_file():
        return  # not a run yet: train() says so
    started_from = Run(out).train_config.init_from
    if started_from and Path(base).resolve() != Path(started_from):
        raise ConfigError(f"run {out} fine-tunes {started_from}, not {base}: resume it with that base path "
                          f"(the base need not exist any more)")  # fmt: skip
