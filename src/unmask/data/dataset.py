"""Read prepared token shards as fixed-length sequences.

A split of n tokens is chunked into ceil(n / seq_len) sequences; the last one is
padded with `pad_id` (never a loss target, never attended to), so one epoch
consumes exactly n real tokens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from unmask.config import ConfigError
from unmask.data.batch import Batch
from unmask.data.instructions import InstructionData, is_instruction_folder
from unmask.data.manifest import CHECKED_FILES, REDO, check_size, file_identity, open_tokens, read_manifest
from unmask.data.tokenizer import load_tokenizer


def open_data(path: str | Path) -> TokenData | InstructionData:
    """A prepared folder: token shards (unmask prepare) or conversations (unmask finetune prepare)."""
    return InstructionData(path) if is_instruction_folder(Path(path)) else TokenData(path)


class TokenData:
    def __init__(self, path: str | Path):
        """Open a prepared folder; a damaged one (manifest, sizes) is refused with one ConfigError line."""
        self.path = Path(path)
        self.manifest, raw = read_manifest(self.path)
        self._manifest_sha256 = hashlib.sha256(raw).hexdigest()
        m = self.manifest
        self.seq_len, self.pad_id, self.mask_id, self.eod_id = m["seq_len"], m["pad_id"], m["mask_id"], m["eod_id"]
        self.vocab_size = m["vocab_size"]
        self._check_recorded_sizes()
        self.tokens = {split: open_tokens(self.path, m, split) for split in ("train", "val")}

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / "tokenizer.json")

    def n_tokens(self, split: str) -> int:
        return len(self.tokens[split])

    def n_sequences(self, split: str) -> int:
        return -(-self.n_tokens(split) // self.seq_len)

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """A fresh shuffle of the training sequences for each epoch, fixed by (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(self.n_sequences("train"))

    def split(self, split: str) -> Sequences:
        """The `train` or `val` tokens as fixed-length sequences."""
        return Sequences(self.tokens[split], self.seq_len, self.pad_id)

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        """Sequences `indices` of `split`, padded with pad_id."""
        return self.split(split).batch(indices)

    def identity(self) -> dict:
        """What this data is, for a run to record and compare on resume: the SHA-256 of the
        manifest as loaded, and the size and SHA-256 of each file now on disk."""
        files = {name: self._file_identity(name) for name in CHECKED_FILES if (self.path / name).is_file()}
        return {"manifest_sha256": self._manifest_sha256, "files": files}

    def verify(self) -> None:
        """Check the files against the sizes and SHA-256s prepare recorded (sizes only for a manifest
        from before checksums were recorded) and every token against vocab_size; raise ConfigError
        naming the file."""
        self._check_recorded_sizes()
        for split in ("train", "val"):
            open_tokens(self.path, self.manifest, split)  # sizes against the token counts
        for name, recorded in self.manifest.get("files", {}).items():
            if self._file_identity(name)["sha256"] != recorded["sha256"]:
                raise ConfigError(f"{self.path / name} does not match the SHA-256 in manifest.json: it changed; {REDO}")
        block = 1 << 24  # tokens per check: flat memory on any size
        for split, tokens in self.tokens.items():
            for start in range(0, len(tokens), block):
                chunk = tokens[start : start + block]
                if len(chunk) and int(chunk.max()) >= self.vocab_size:
                    at = start + int(np.argmax(chunk >= self.vocab_size))
                    raise ConfigError(
                        f"{self.path / split}.bin: token {int(tokens[at])} at position {at} is outside "
                        f"the vocabulary (vocab_size={self.vocab_size}); {REDO}"
                    )

    def _check_recorded_sizes(self) -> None:
        for name, recorded in self.manifest.get("files", {}).items():
            check_size(self.path / name, recorded["bytes"])

    def _file_identity(self, name: str) -> dict:
        try:
            return file_identity(self.path / name)
        except OSError as e:
            raise ConfigError(f"cannot read {self.path / name} ({e.strerror}); {REDO}") from None


class Sequences:
    """A flat token array read as fixed-length sequences, the last one padded with pad_id.

    The one chunking rule of the package: prepared splits (TokenData.split) and text tokenised
    at evaluation time (`unmask eval --text`) both go through it.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, pad_id: int):
        self.tokens, self.seq_len, self.pad_id = tokens, seq_len, pad_id

    def n_tokens(self) -> int:
        return len(self.tokens)

    def n_sequences(self) -> int:
        return -(-len(self.tokens) // self.seq_len)

    def batch(self, indices: np.ndarray) -> Batch:
        """Sequences `indices` (B, T), padded with pad_id; every real token counts (no loss mask)."""
        import torch  # lazily: preparing data never needs torch

        tokens, T = self.tokens, self.seq_len
        out = np.full((len(indices), T), self.pad_id, dtype=np.int64)
        n_full = len(tokens) // T
        full = indices < n_full
        if full.any():
            out[full] = tokens[: n_full * T].reshape(n_full, T)[indices[full]]
        for row in np.flatnonzero(~full):  # only the one partial sequence at the end
            chunk = tokens[indices[row] * T :]
            out[row, : len(chunk)] = chunk
        return Batch(torch.from_numpy(out))
