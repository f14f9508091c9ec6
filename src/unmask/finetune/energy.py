"""EDLM's energy model trained by noise-contrastive estimation (arXiv 2410.21357): `unmask finetune energy`.

The energy E(x0, x_t) is a scalar per sequence, lower = more likely; the sampler weights candidates by
softmax(−E / τ). NCE pushes the data's energy down and the frozen diffusion model's own samples' up:

    L = −log σ(−E(x0 from the data)) − log σ(E(x0 drawn from p_θ(· | x_t)))

Energies in, never probabilities: passing log p where −E is meant flips or rescales the weights. The loss,
the sampling of x0 and the model's head live in unmask.objectives.energy and unmask.model (Transformer.energy);
this module starts a run of that objective from an MDM run, on its own pre-training data by default, with
pre-training's loop (budget, schedule, checkpoints, resume, signals).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from unmask.config import ENERGY_DEFAULTS, ConfigError, TrainConfig
from unmask.finetune.sft import finetuning_config
from unmask.objectives.energy import nce_loss
from unmask.run import Run


def energy_config(base: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with the energy objective and the MDM run `base` as its starting point and frozen noise model."""
    return finetuning_config("energy", base, train)


def train_energy(
    base: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
) -> Path:
    """Train an energy model for the MDM run `base` into the run directory `out`; returns `out`.

    data: a TokenData folder of the base's tokenizer; none = the base run's own pre-training data."""
    from unmask.training import train as run_train

    cfg = energy_config(base, train or ENERGY_DEFAULTS)
    if data is None and not resume:
        data = Run(base).data_path
        if data is None or not data.is_dir():
            raise ConfigError(f"run {base}: its data folder {data} is gone; pass --data DIR (same tokenizer)")
    # on resume, a value left at its default is not a change
    defaults = dataclasses.replace(ENERGY_DEFAULTS, objective=cfg.objective, init_from=cfg.init_from)
    return run_train(data, out, None, cfg, resume=resume, quiet=quiet, tensorboard=tensorboard, defaults=defaults)


__all__ = ["energy_config", "nce_loss", "train_energy"]
