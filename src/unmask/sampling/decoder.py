"""The one decoding entry point: a run's objective chooses its decoder, here and nowhere else.

`generate` continues prompts with AR decoding (`ar.py`, left to right with a KV cache) or with the
MDM sampler of a SamplerConfig (`mdm.py`), as the objective's `decoder` says. `unmask sample`, the
serve engine, `unmask finetune eval` and the lm-eval adapter all call it, so for one seed they
decode the same tokens; each still picks its own prompt window and length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from unmask.config import check
from unmask.objectives.base import Objective, Specials
from unmask.sampling.ar import sample_ar
from unmask.sampling.base import SampleOutput
from unmask.sampling.config import SamplerConfig
from unmask.sampling.mdm import sample_mdm


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    *,
    length: int,
    objective: Objective,
    sampler: SamplerConfig,
    specials: Specials,
    generator: torch.Generator | None = None,
    prompt_mask: torch.Tensor | None = None,
    on_step: Callable[[list[list[int]], torch.Tensor], None] | None = None,
    energy_model: torch.nn.Module | None = None,
) -> SampleOutput:
    """Continue prompts (B, P) by `length` tokens with the decoder of `objective`; tokens (B, P + length).

    AR reads temperature, top_k and top_p of `sampler` (its MDM-only options are not consulted) and
    stops a sequence at specials.eod_id; MDM runs the whole SamplerConfig and infills mask tokens inside
    the prompt. Both never emit the pad or mask id.
    prompt_mask: (B, P) True for real prompt tokens, padding on the left (`left_pad`); None = no padding.
    on_step: called after every step with the positions committed per sequence and the canvas (B, T).
    energy_model: EDLM's energy (an AR or energy run) for an MDM run's ancestral sampler.
    """
    banned = (specials.pad_id, specials.mask_id)
    if objective.decoder == "mdm":
        return sample_mdm(
            model, prompt, length, specials.mask_id, sampler, banned, generator, energy_model,
            prompt_mask=prompt_mask, on_step=on_step,
        )  # fmt: skip
    check(energy_model is None, f"{objective.name} runs decode left to right: an energy run weights MDM samples only")
    return sample_ar(
        model, prompt, length, sampler.temperature, sampler.top_k, sampler.top_p, eod_id=specials.eod_id,
        banned_ids=banned, generator=generator, query_is_target=objective.query_is_target, prompt_mask=prompt_mask,
        on_step=on_step,
    )  # fmt: skip
