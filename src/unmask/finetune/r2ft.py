"""Rejective fine-tuning (R2FT) of an MDM SFT run on its instruction folder (`unmask finetune r2ft`).

The objective (the cut, the rejected continuations, the preference loss) is unmask.objectives.r2ft;
this module checks the base, counts the high-prior filler's frequent tokens when the filler is on,
and runs pre-training's loop: budget, schedule, checkpoints, resume and signals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unmask.config import R2FT_DEFAULTS, TrainConfig
from unmask.data.instructions import InstructionData
from unmask.finetune.sft import finetuning_config, run_finetuning

FILLER_TOP = 32
"""The filler draws from this many of the most frequent answer tokens."""


def frequent_tokens(data: str | Path, top: int = FILLER_TOP) -> tuple[list[int], list[int]]:
    """(token ids, counts), most frequent first, of the answer text in an instruction folder's training split
    (learned tokens that are not special: the end-of-text, mask and padding ids are left out)."""
    folder = InstructionData(data)
    tokens, learned = folder.rows["train"]
    answers = np.asarray(tokens)[np.asarray(learned).astype(bool)]
    counts = np.bincount(answers.astype(np.int64), minlength=folder.vocab_size)
    counts[[folder.eod_id, folder.mask_id, folder.pad_id]] = 0
    special = [i for i in folder.tokenizer().get_added_tokens_decoder() if i < len(counts)]
    counts[special] = 0  # the chat template's role tokens
    order = [int(i) for i in np.argsort(-counts, kind="stable")[:top] if counts[i] > 0]
    return order, [int(counts[i]) for i in order]


def r2ft_config(base: str | Path, data: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with objective r2ft, the SFT run `base` as its starting point, and the filler's tokens when it is on."""
    cfg = finetuning_config("r2ft", base, train)
    if cfg.r2ft.filler_rate > 0 and not cfg.r2ft.filler_tokens:
        tokens, counts = frequent_tokens(data)
        cfg = cfg.with_flat(r2ft_filler_tokens=tokens, r2ft_filler_counts=counts)
    return cfg


def r2ft(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
) -> Path:
    """R2FT of the SFT run `base` on the instruction folder `data` into the run directory `out`; returns `out`."""
    return run_finetuning(base, data, out, train, resume, quiet, tensorboard, R2FT_DEFAULTS,
                          lambda cfg: r2ft_config(base, data, cfg))  # fmt: skip
