"""Training objectives as classes, in one explicit registry.

    ar            next-token prediction (objectives/ar.py)
    ar_orderings  AR over N fixed token orderings (objectives/ar.py)
    mdm           masked diffusion, MDLM / LLaDA ELBO (objectives/mdm.py)
    sft_mdm       supervised fine-tuning of an MDM on instruction data, LLaDA's recipe (objectives/sft.py)
    sft_ar        supervised fine-tuning of an AR model: answer tokens only (objectives/sft.py)
    r2ft          rejective fine-tuning of an SFT'd MDM against repeated phrases (objectives/r2ft.py)
    energy        EDLM's energy model, NCE against a frozen MDM's samples (objectives/energy.py)

Each is a small `Objective` subclass. `objective_for(cfg)` is the one place a run's config becomes behaviour (the
class, given its own options group); `get_objective(name)` gives one with default options, for readers of what it
is; `register` adds one (a fine-tuning objective, or a toy in a test) without touching any other file.
"""

from __future__ import annotations

from unmask.config import ConfigError, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.ar import AR, AROrderings, make_orderings
from unmask.objectives.base import LossOutput, Objective, Specials
from unmask.objectives.energy import Energy
from unmask.objectives.mdm import MDM, MDMAdapt, mask_probability
from unmask.objectives.r2ft import R2FT
from unmask.objectives.sft import SFTAR, SFTMDM

OBJECTIVES: dict[str, type[Objective]] = {
    o.name: o for o in (AR, MDM, AROrderings, SFTMDM, SFTAR, R2FT, Energy, MDMAdapt)
}


def register(objective: type[Objective]) -> type[Objective]:
    """Add an objective class to the registry (replacing one of the same name); returns it (a class decorator)."""
    OBJECTIVES[objective.name] = objective
    return objective


def _objective_class(name: str) -> type[Objective]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"train.objective={name!r}: must be one of {', '.join(OBJECTIVES)}") from None


def get_objective(name: str) -> Objective:
    """The objective `name` with default options: what it is (attention, decoder, bound), and its loss as a
    run with default options would train it."""
    return _objective_class(name)()


def objective_for(cfg: TrainConfig) -> Objective:
    """A run's objective, holding its options from `cfg`."""
    return _objective_class(cfg.objective).from_config(cfg)


__all__ = [
    "OBJECTIVES",
    "Batch",
    "LossOutput",
    "Objective",
    "Specials",
    "get_objective",
    "make_orderings",
    "mask_probability",
    "objective_for",
    "register",
]
