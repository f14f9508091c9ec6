"""Validation loss on held-out sequences, the same tokens for every objective.

Every objective scores the same tokens: each real token but the first of a sequence, which is
its context (AR cannot predict it; MDM conditions on it, never masked). Exact objectives (AR,
ar_orderings read left to right) give the mean NLL per token in one deterministic pass. Bound
objectives (MDM) give the mean per-token ELBO of those tokens given the first, an *upper bound*
on their NLL, averaged over K Monte Carlo passes whose noise is fixed by a seed so that curves
compare; its standard error is the spread of the K pass means (the passes are i.i.d.). The estimator is
the objective's `validation_passes`: by default K passes of its own training loss, over the tokens its
`n_targets` counts. Objectives whose validation is their own
training loss (fine-tuning, R2FT, NCE: `Objective.validation`) are validated by the same function.

Bits per byte divide the summed NLL by ln 2 times the UTF-8 bytes of the scored tokens, so
runs with different tokenizers compare.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from unmask.objectives.base import Objective, Specials


@dataclass
class ValidationLoss:
    loss: float
    """Mean per-token NLL (exact objectives) or ELBO (MDM), nats."""
    stderr: float | None
    """Standard error over MC passes (MDM); None for an exact NLL."""
    n_tokens: int
    passes: int
    kind: str
    """'NLL' or 'ELBO (upper bound on NLL)'."""
    bits_per_byte: float | None = None
    """loss · n_tokens / (ln 2 · n_bytes); an upper bound too for MDM. None when no byte counts are known."""
    n_bytes: int = 0
    """UTF-8 bytes of the scored tokens (special tokens count 0 bytes; their NLL still counts)."""

    def to_dict(self) -> dict:
        return asdict(self)


def token_byte_lengths(tok) -> np.ndarray:
    """UTF-8 bytes of every token id (V,) of a `tokenizers.Tokenizer`: 0 for special tokens.

    Byte-level BPE (GPT-2 style, and unmask's own): each character of a vocabulary entry stands
    for exactly one byte, so the length of the entry is exact. Other tokenizers: the length of
    the token decoded on its own (may miss a word-boundary space the decoder adds or strips).
    """
    vocab = tok.get_vocab()
    table = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    decoder = json.loads(tok.to_str()).get("decoder") or {}
    byte_level = decoder.get("type") == "ByteLevel"
    for piece, i in vocab.items():
        if i not in special:
            table[i] = len(piece) if byte_level else len(tok.decode([i]).encode("utf-8"))
    return table


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    sequences,
    objective: Objective,
    specials: Specials,
    *,
    mc_passes: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    autocast: bool = False,
    max_batch_tokens: int = 16_384,
    byte_lengths: np.ndarray | None = None,
) -> ValidationLoss:
    """Mean NLL (exact objectives) or the mean of K fixed-seed Monte Carlo passes ± their standard error
    (bound objectives), with bits per byte.

    What is scored follows `objective.validation`, because two questions get two estimators:
    'tokens' (the study's protocol): every real token but the first of each sequence, the same tokens for
        every objective, so AR's NLL and MDM's ELBO compare (the objective's estimator, validation_passes:
        MDM's batched count estimator);
    'own_loss': the objective's training loss normalised by its n_targets, for batches that are not plain
        sequences (fine-tuning's conversations) or a loss that is no likelihood (R2FT's preference, NCE),
        where "the same tokens" has no meaning; no bits per byte.

    sequences: `unmask.data.Sequences` or any n_sequences(), batch(indices) -> Batch on the CPU, seq_len.
    objective: the run's own (unmask.objectives.objective_for), holding its options (the orderings' seed).
    batch_size: sequences per batch; MDM noise levels are stratified across them.
    byte_lengths: token_byte_lengths of the tokenizer; None = no bits per byte.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_seq = sequences.n_sequences()
    batches = [sequences.batch(np.arange(s, min(s + batch_size, n_seq))) for s in range(0, n_seq, batch_size)]
    own_loss = objective.validation == "own_loss"
    if own_loss:
        denominator = sum(objective.n_targets(b, specials.pad_id) for b in batches)
        n_tokens, n_bytes = sum(objective.real_tokens(b, specials.pad_id) for b in batches), 0
    else:
        denominator, n_bytes = _protocol_tokens(objective, batches, specials, byte_lengths)
        n_tokens = denominator
    generator = torch.Generator(device).manual_seed(seed)  # exact objectives read left to right: no noise
    with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        pass_sums = objective.validation_passes(model, batches, mc_passes, generator, specials, max_batch_tokens)
    model.train(was_training)
    passes = len(pass_sums)
    pass_means = pass_sums.double().cpu().numpy() / max(denominator, 1)  # host-device sync: once per evaluation
    mean = float(pass_means.mean())
    stderr = float(pass_means.std(ddof=1) / math.sqrt(passes)) if passes > 1 else None
    bpb = mean * n_tokens / (math.log(2) * n_bytes) if n_bytes else None
    return ValidationLoss(mean, stderr, n_tokens, passes, objective.bound_name, bpb, n_bytes)


def _protocol_tokens(objective, batches, specials, byte_lengths) -> tuple[int, int]:
    """(tokens, UTF-8 bytes) the protocol scores: every real token but the first of each sequence (a bound
    objective without a batched estimator whose loss covers all real tokens, as its n_targets says: all of them)."""
    real = [b.tokens != specials.pad_id for b in batches]
    all_real = objective.scores_first_token and all(
        objective.n_targets(b, specials.pad_id) == int(r.sum()) for b, r in zip(batches, real, strict=True)
    )
    scored = real if all_real else [r[:, 1:] for r in real]
    targets = [b.tokens if all_real else b.tokens[:, 1:] for b in batches]
    n_tokens = sum(int(s.sum()) for s in scored)
    if byte_lengths is None:
        return n_tokens, 0
    return n_tokens, sum(int(byte_lengths[t.numpy()][s.numpy()].sum()) for t, s in zip(targets, scored, strict=True))
