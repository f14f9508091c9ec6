"""Training objectives as records, in one explicit registry.

    ar            next-token prediction (objectives/ar.py)
    ar_orderings  AR over N fixed token orderings (objectives/ar.py)
    mdm           masked diffusion, MDLM / LLaDA ELBO (objectives/mdm.py)
    sft_mdm       supervised fine-tuning of an MDM on instruction data, LLaDA's recipe (objectives/sft.py)
    sft_ar        supervised fine-tuning of an AR model: answer tokens only (objectives/sft.py)
    r2ft          rejective fine-tuning of an SFT'd MDM against repeated phrases (objectives/r2ft.py)
    energy        EDLM's energy model, NCE against a frozen MDM's samples (objectives/energy.py)

`get_objective(name)` is the one place a name becomes behaviour; `register` adds one
(a fine-tuning objective, or a toy in a test) without touching any other file.
"""

from __future__ import annotations

from unmask.config import ConfigError
from unmask.objectives.ar import AR, AR_ORDERINGS, make_orderings, run_orderings
from unmask.objectives.base import LossOutput, Objective, Specials
from unmask.objectives.energy import ENERGY
from unmask.objectives.mdm import MDM, MDM_ADAPT, mask_probability
from unmask.objectives.r2ft import R2FT
from unmask.objectives.sft import SFT_AR, SFT_MDM

OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (AR, MDM, AR_ORDERINGS, SFT_MDM, SFT_AR, R2FT, ENERGY, MDM_ADAPT)
}


def register(objective: Objective) -> Objective:
    """Add an objective to the registry (replacing one of the same name); returns it."""
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"train.objective={name!r}: must be one of {', '.join(OBJECTIVES)}") from None


__all__ = [
    "OBJECTIVES",
    "LossOutput",
    "Objective",
    "Specials",
    "get_objective",
    "make_orderings",
    "mask_probability",
    "register",
    "run_orderings",
]
