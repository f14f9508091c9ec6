"""Read prepared token shards as fixed-length sequences.

A split of n tokens is chunked into ceil(n / seq_len) sequences; the last one is
padded with `pad_id` (never a loss target, never attended to), so one epoch
consumes exactly n real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from unmask.config import ConfigError
from unmask.data.tokenizer import load_tokenizer


class TokenData:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise ConfigError(f"{self.path} is not a prepared data folder (no manifest.json); run unmask prepare")
        self.manifest = json.loads(manifest_path.read_text())
        m = self.manifest
        self.seq_len, self.pad_id, self.mask_id, self.eod_id = m["seq_len"], m["pad_id"], m["mask_id"], m["eod_id"]
        self.vocab_size = m["vocab_size"]
        self.tokens = {
            split: np.memmap(self.path / f"{split}.bin", dtype=m["dtype"], mode="r")
            if m[key]
            else np.zeros(0, m["dtype"])
            for split, key in (("train", "unique_tokens"), ("val", "val_tokens"))
        }

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / "tokenizer.json")

    def n_tokens(self, split: str) -> int:
        return len(self.tokens[split])

    def n_sequences(self, split: str) -> int:
        return -(-self.n_tokens(split) // self.seq_len)

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """A fresh shuffle of the training sequences for each epoch, fixed by (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(self.n_sequences("train"))

    def batch(self, split: str, indices: np.ndarray) -> torch.Tensor:
        """Sequences `indices` of `split` as a (B, T) int64 tensor, padded with pad_id."""
        tokens, T = self.tokens[split], self.seq_len
        out = np.full((len(indices), T), self.pad_id, dtype=np.int64)
        n_full = len(tokens) // T
        full = indices < n_full
        if full.any():
            out[full] = tokens[: n_full * T].reshape(n_full, T)[indices[full]]
        for row in np.flatnonzero(~full):  # only the one partial sequence at the end
            chunk = tokens[indices[row] * T :]
            out[row, : len(chunk)] = chunk
        return torch.from_numpy(out)
