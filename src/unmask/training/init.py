"""Starting a run from another run's weights (fine-tuning): the checks that make it safe, and the resize.

The base run fixes the model (shape, attention direction); the data's tokenizer must extend the base
run's (every base token at its id, the chat template's tokens appended), with the same special ids,
so the mask / pad / end-of-text rows the base learned keep their meaning. Embedding rows beyond the
base vocabulary start at the mean of the base rows: a new token looks like an average token, rather
than a random vector whose logit could dominate the tied output layer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from unmask.checkpoint import sha256_of
from unmask.config import ConfigError, ModelConfig
from unmask.model import read_weights
from unmask.objectives import Objective
from unmask.run import Run


def start_from(base_path: str, data, objective: Objective) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(model config, initial weights) of an `objective` run on `data` starting from the base run's last weights.

    Which base runs an objective may start from is its own rule (Objective.check_base), checked here too."""
    base = Run(base_path)
    objective.check_base(base)
    base_vocab, data_vocab = base.tokenizer().get_vocab(), data.tokenizer().get_vocab()
    changed = [t for t, i in base_vocab.items() if data_vocab.get(t) != i]
    if changed:
        raise ConfigError(
            f"data {data.path}: its tokenizer is not the base run's ({len(changed)} tokens differ, e.g. "
            f"{changed[0]!r}); prepare it from this base with unmask finetune prepare --run {base.path}"
        )
    ids = base.special_ids
    if (ids.eod_id, ids.mask_id, ids.pad_id) != (data.eod_id, data.mask_id, data.pad_id):
        raise ConfigError(f"data {data.path}: special ids differ from base run {base.path}'s; prepare it again")
    base_cfg = base.model_config
    if data.vocab_size < base_cfg.vocab_size:
        raise ConfigError(f"data {data.path}: vocabulary {data.vocab_size} < base's {base_cfg.vocab_size}")
    weights = read_weights(base.weights("last"))
    for name in ("embed.weight", "head.weight"):  # head: an untied output projection (an imported Llama, LLaDA)
        if name in weights:
            weights[name] = grow_rows(weights[name], data.vocab_size)
    if objective.energy:  # a zero head: E = 0 at the start, every candidate weighs the same (plain sampling)
        weights |= {"energy_head.weight": torch.zeros(1, base_cfg.d_model), "energy_head.bias": torch.zeros(1)}
    shift = base_cfg.shift_logits or objective.from_ar  # an adapted model reads token j's logits at j - 1
    return dataclasses.replace(base_cfg, vocab_size=data.vocab_size, energy_head=objective.energy,
                               shift_logits=shift), weights  # fmt: skip


def grow_rows(embedding: torch.Tensor, rows: int) -> torch.Tensor:
    """The embedding with rows appended up to `rows`, each the mean of the existing ones."""
    extra = rows - len(embedding)
    return torch.cat([embedding, embedding.mean(0, keepdim=True).expand(extra, -1)]) if extra else embedding


def check_base_unchanged(run: Run) -> None:
    """Refuse to resume a run whose base run's weights changed since it started (retrained in place)."""
    recorded = run.config.get("init_from_sha256")
    base = run.train_config.init_from
    if recorded and base and sha256_of(Path(base) / "last.safetensors") != recorded:
        raise ConfigError(
            f"run {run.path} started from {base}, whose last.safetensors has changed since (SHA-256 differs); "
            f"restore that base or start a new run"
        )
