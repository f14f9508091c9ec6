"""A prepared instruction folder (fine-tuning data): templated conversations as fixed-length rows.

`unmask finetune prepare` writes it (see unmask.finetune.prepare); a fine-tuning run reads it the way a
pre-training run reads a token folder (budget, epoch shuffles, resume, identity checks):

  manifest.json        kind "instructions", seq_len, special ids, vocab_size, dtype, n_train / n_val
                       conversations, what was dropped and why, size and SHA-256 of every other file
  tokenizer.json       the base run's tokenizer with the chat template's role tokens added
  train.bin, val.bin   token ids, one row of seq_len per conversation, right-padded with pad_id
  train.learned, val.learned   one byte per token: 1 where the token is learned (assistant text + EOS)

A batch is a `Batch`: the tokens, and the learned flags as its loss mask.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from unmask.config import ConfigError, os_reason
from unmask.data.batch import Batch
from unmask.data.manifest import DTYPES, check_size, file_identity

KIND = "instructions"
SPLITS = ("train", "val")
FILES = tuple(f"{split}.{ext}" for split in SPLITS for ext in ("bin", "learned"))
CHECKED_FILES = (*FILES, "tokenizer.json")
REDO = "prepare it again (unmask finetune prepare --overwrite true)"


def is_instruction_folder(path: Path) -> bool:
    """Whether `path` holds a manifest that says it is an instruction folder (unchecked otherwise)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_bytes()).get("kind") == KIND
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


class InstructionData:
    """A prepared instruction folder, opened read-only; a damaged one is refused with one ConfigError line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise ConfigError(f"{self.path} is not a prepared instruction folder (no manifest.json); {REDO}")
        try:
            raw = manifest_path.read_bytes()
            m = json.loads(raw)
        except (OSError, ValueError, RecursionError):
            raise ConfigError(f"{manifest_path} is unreadable or not JSON; {REDO}") from None
        ints = ("seq_len", "pad_id", "mask_id", "eod_id", "vocab_size", "n_train", "n_val")
        if not isinstance(m, dict) or m.get("kind") != KIND:
            raise ConfigError(f"{manifest_path} is not an instruction folder's manifest; {REDO}")
        if not all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) and m[k] >= 0 for k in ints):
            raise ConfigError(f"{manifest_path}: {', '.join(ints)} must be integers >= 0; {REDO}")
        if m.get("dtype") not in DTYPES or not 2 <= m["seq_len"] or m["n_train"] < 1:
            raise ConfigError(f"{manifest_path}: dtype, seq_len or n_train is invalid; {REDO}")
        if not m["vocab_size"] <= (2**16 if m["dtype"] == "uint16" else 2**32):  # write_instruction_folder's dtype
            raise ConfigError(f"{manifest_path}: vocab_size {m['vocab_size']} does not fit dtype {m['dtype']}; {REDO}")
        if not all(0 <= m[k] < m["vocab_size"] for k in ("pad_id", "mask_id", "eod_id")):
            raise ConfigError(f"{manifest_path}: a special id is outside vocab_size {m['vocab_size']}; {REDO}")
        self.manifest, self._manifest_sha256 = m, hashlib.sha256(raw).hexdigest()
        self.seq_len, self.pad_id, self.mask_id, self.eod_id = m["seq_len"], m["pad_id"], m["mask_id"], m["eod_id"]
        self.vocab_size = m["vocab_size"]
        self.rows = {split: self._open(split) for split in SPLITS}

    def _open(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        n, T, dtype = self.manifest[f"n_{split}"], self.seq_len, self.manifest["dtype"]
        tokens, learned = self.path / f"{split}.bin", self.path / f"{split}.learned"
        check_size(tokens, n * T * DTYPES[dtype], f"{n} conversations of {T} {dtype} tokens")
        check_size(learned, n * T, f"{n} conversations of {T} flags")
        if n == 0:
            return np.zeros((0, T), dtype), np.zeros((0, T), np.uint8)
        return (
            np.memmap(tokens, dtype=dtype, mode="r", shape=(n, T)),
            np.memmap(learned, dtype=np.uint8, mode="r", shape=(n, T)),
        )

    def tokenizer(self):
        from unmask.data.tokenizer import load_tokenizer

        return load_tokenizer(self.path / "tokenizer.json")

    def n_sequences(self, split: str) -> int:
        return len(self.rows[split][0])

    def n_tokens(self, split: str) -> int:
        """Real (non-padding) tokens of the split: prompts and answers."""
        return int(self.manifest.get(f"{split}_tokens", 0))

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(self.n_sequences("train"))

    def split(self, split: str) -> Conversations:
        return Conversations(*self.rows[split], self.pad_id)

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        return self.split(split).batch(indices)

    def identity(self) -> dict:
        files = {name: file_identity(self.path / name) for name in CHECKED_FILES if (self.path / name).is_file()}
        return {"manifest_sha256": self._manifest_sha256, "files": files}

    def verify(self) -> None:
        """Check every file against the size and SHA-256 prepare recorded."""
        for name, recorded in (self.manifest.get("files") or {}).items():
            if name in CHECKED_FILES and file_identity(self.path / name) != recorded:
                raise ConfigError(f"{self.path / name} does not match manifest.json (size or SHA-256); {REDO}")


class Conversations:
    """A split's rows as batches: the tokens, and the learned flags as the loss mask."""

    def __init__(self, tokens: np.ndarray, learned: np.ndarray, pad_id: int):
        self.tokens, self.learned, self.pad_id = tokens, learned, pad_id
        self.seq_len = tokens.shape[1]

    def n_sequences(self) -> int:
        return len(self.tokens)

    def batch(self, indices: np.ndarray) -> Batch:
        import torch

        idx = np.asarray(indices)
        return Batch(torch.from_numpy(self.tokens[idx].astype(np.int64)), torch.from_numpy(self.learned[idx] != 0))


def write_instruction_folder(
    out: Path,
    tokenizer_json: str,
    splits: dict[str, list[tuple[list[int], list[bool]]]],
    seq_len: int,
    specials: dict[str, int],
    vocab_size: int,
    extra: dict,
) -> Path:
    """Write the folder whole (into a temporary sibling, then renamed): a kill leaves no half folder."""
    dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # our own leftover of this very process id
        tmp.mkdir(parents=True)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        counts = {}
        for split in SPLITS:
            rows = splits[split]
            tokens = np.full((len(rows), seq_len), specials["pad_id"], dtype=dtype)
            learned = np.zeros((len(rows), seq_len), np.uint8)
            for r, (ids, flags) in enumerate(rows):
                tokens[r, : len(ids)], learned[r, : len(flags)] = ids, flags
            tokens.tofile(tmp / f"{split}.bin")
            learned.tofile(tmp / f"{split}.learned")
            counts |= {f"n_{split}": len(rows), f"{split}_tokens": sum(len(ids) for ids, _ in rows)}
        manifest = {
            "format": 1,
            "kind": KIND,
            "seq_len": seq_len,
            **specials,
            "vocab_size": vocab_size,
            "dtype": dtype,
            **counts,
            **extra,
            "files": {name: file_identity(tmp / name) for name in CHECKED_FILES},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except OSError as e:  # a full disk: the half-written folder goes, nothing at --out changes
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(
            f"writing {out} failed ({os_reason(e) or e}); nothing was written: free space and retry"
        ) from None
    if out.exists():  # the caller checked it is empty, or an instruction folder to replace (--overwrite)
        shutil.rmtree(out) if is_instruction_folder(out) else out.rmdir()
    tmp.rename(out)
    return out
