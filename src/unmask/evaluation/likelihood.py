"""A run's validation loss: on the held-out split of its data folder, or on any text files.

The estimator is the objective's (unmask.objectives.validation): the exact NLL for the AR
family, the K-pass ELBO (an upper bound) for MDM. Text files are read with the run's own
tokenizer, each file one document followed by end-of-document, and chunked into the run's
seq_len exactly as prepared data is, so a run copied alone can still be scored.
"""

from __future__ import annotations

import numpy as np

from unmask.config import ConfigError
from unmask.data.corpus import read_utf8_file
from unmask.data.dataset import Sequences
from unmask.objectives.validation import ValidationLoss, token_byte_lengths, validation_loss
from unmask.run import Run

__all__ = ["ValidationLoss", "run_validation", "text_sequences", "token_byte_lengths", "validation_loss"]


def text_sequences(run: Run, files: list[str]) -> Sequences:
    """Text files as the run's token sequences (each file a document, end-of-document after it)."""
    tok, ids = run.tokenizer(), run.special_ids
    tokens: list[int] = []
    for name in files:
        tokens += tok.encode(read_utf8_file(name, "--text", "UTF-8 text files")).ids + [ids.eod_id]
    if len(tokens) <= len(files):
        raise ConfigError(f"--text {' '.join(files)}: no text to score (the files are empty)")
    return Sequences(np.asarray(tokens, dtype=np.int64), run.model_config.seq_len, ids.pad_id)


def run_validation(
    run: Run,
    model,
    mc_passes: int | None = None,
    seed: int = 0,
    text: list[str] | None = None,
) -> tuple[ValidationLoss, str]:
    """(validation loss of `model`, where it was measured): `text` files, else the run's own validation split."""
    cfg = run.train_config
    if text:
        sequences, source = text_sequences(run, text), "text: " + ", ".join(text)
    else:
        data = run.data()
        sequences, source = data.split("val"), f"validation split of {data.path}"
        if sequences.n_tokens() == 0:
            raise ConfigError(f"data {data.path} has no validation tokens; pass --text FILE or --validation false")
    val = validation_loss(
        model,
        sequences,
        run.objective,
        run.specials,
        mc_passes=mc_passes or cfg.eval.mc_passes,
        seed=seed,
        batch_size=cfg.eval.batch_size,
        byte_lengths=token_byte_lengths(run.tokenizer()),
    )
    return val, source
