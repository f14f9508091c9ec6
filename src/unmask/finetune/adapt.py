"""AR -> diffusion adaptation: an AR run's weights continued as an MDM (`unmask finetune adapt`).

Dream 7B's recipe (Ye et al., 2025): the attention turns bidirectional at once and the output keeps the AR
model's shift — position i's hidden state, which learned to predict token i + 1, is where token i + 1's logits
are read (ModelConfig.shift_logits) — so the adapted model starts from what the AR model knows instead of
relearning where each prediction lives. The loss is MDM's ELBO (objective `mdm_adapt`); the run is a
fine-tuning run like SFT: resumable, its base checked by path.
"""

from __future__ import annotations

from pathlib import Path

from unmask.config import ADAPT_DEFAULTS, ConfigError, TrainConfig
from unmask.finetune.sft import finetuning_config, run_finetuning
from unmask.run import Run


def adapt_config(base: str | Path, train: TrainConfig) -> TrainConfig:
    """`train` with the adaptation objective and the base as its starting point; the base must be an AR run."""
    return finetuning_config("mdm_adapt", base, train)


def adapt(
    base: str | Path,
    data: str | Path | None,
    out: str | Path,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
) -> Path:
    """Continue the AR run `base` as an MDM on the token data folder `data` (default: the base's own pre-training
    data) into the run directory `out`; returns `out`."""
    if data is None and not resume:
        data = Run(base).data_path
        if data is None:
            raise ConfigError(f"run {base} records no training data (an imported run); pass --data: a token data "
                              f"folder prepared with the run's tokenizer")  # fmt: skip
    return run_finetuning(base, data, out, train, resume, quiet, tensorboard, ADAPT_DEFAULTS,
                          lambda cfg: adapt_config(base, cfg))  # fmt: skip
