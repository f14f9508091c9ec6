"""`unmask prepare`: corpus → tokenizer → token shards with an exact budget.

Every document is assigned to validation with probability `val_fraction` by a
seeded generator (one draw per document, so the assignment does not depend on
the budgets). Training takes the other documents in order, each followed by the
end-of-document token, until exactly U tokens (the last document truncated);
validation likewise until `val_tokens`. The two are disjoint by construction.
Shards are flat memory-mapped token arrays; chunking into `seq_len` sequences
happens on read (dataset.py). Everything is written to a temporary folder that
is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unmask import __version__
from unmask.config import ConfigError, DataConfig, to_dict
from unmask.data.corpus import iter_documents, list_sources
from unmask.data.tokenizer import load_tokenizer, model_vocab_size, special_ids, train_bpe
from unmask.progress import progress_bar

ENCODE_BATCH_CHARS = 4_000_000  # documents per encode_batch call: enough to keep all cores busy


def assign_splits(docs: Iterator[str], val_fraction: float, seed: int) -> Iterator[tuple[bool, str]]:
    """(is_validation, document) for each document; fixed by the seed."""
    rng = np.random.default_rng(seed)
    for doc in docs:
        yield bool(rng.random() < val_fraction), doc


class TokenWriter:
    """Appends tokens to a flat binary file until it holds exactly `limit` tokens."""

    def __init__(self, path: Path, limit: int, dtype: np.dtype):
        self.file, self.limit, self.dtype, self.n = open(path, "wb"), limit, dtype, 0

    @property
    def full(self) -> bool:
        return self.n >= self.limit

    def write(self, ids: list[int]) -> int:
        take = ids[: self.limit - self.n]
        np.asarray(take, dtype=self.dtype).tofile(self.file)
        self.n += len(take)
        return len(take)

    def close(self) -> None:
        self.file.close()


def _batches(pairs: Iterator[tuple[bool, str]]) -> Iterator[list[tuple[bool, str]]]:
    batch, chars = [], 0
    for pair in pairs:
        batch.append(pair)
        chars += len(pair[1])
        if chars >= ENCODE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _tokenizer_texts(cfg: DataConfig) -> Iterator[str]:
    """Training-split documents up to `tokenizer_train_bytes` (validation never seen)."""
    budget = cfg.tokenizer_train_bytes
    for is_val, doc in assign_splits(iter_documents(cfg), cfg.val_fraction, cfg.seed):
        if budget <= 0:
            return
        if not is_val:
            budget -= len(doc.encode("utf-8"))
            yield doc


def prepare(cfg: DataConfig, out: str | Path, overwrite: bool = False, quiet: bool = False) -> Path:
    """Write tokenizer.json, train.bin, val.bin and manifest.json to `out`; returns `out`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"output {out} already exists; pass --overwrite true or choose another --out")
    sources = list_sources(cfg.inputs)  # fail on a missing input before any work
    if not next(iter_documents(cfg), None):
        raise ConfigError(f"the corpus is empty: no non-blank document in {[str(s) for s in sources]}")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write_shards(cfg, sources, tmp, quiet)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_shards(cfg: DataConfig, sources: list[Path], tmp: Path, quiet: bool) -> dict:
    tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else train_bpe(_tokenizer_texts(cfg), cfg.vocab_size)
    tok.save(str(tmp / "tokenizer.json"))
    ids = special_ids(tok)
    vocab = model_vocab_size(tok)
    dtype = np.dtype(np.uint16 if vocab <= 2**16 else np.uint32)
    train = TokenWriter(tmp / "train.bin", cfg.unique_tokens, dtype)
    val = TokenWriter(tmp / "val.bin", cfg.val_tokens, dtype)
    counts = {"train": 0, "val": 0, "read": 0}
    truncated = False
    docs_hash = hashlib.sha256()
    start = time.perf_counter()
    n_encoded = 0
    pairs = assign_splits(iter_documents(cfg), cfg.val_fraction, cfg.seed)
    with progress_bar("tokenising", total=cfg.unique_tokens + cfg.val_tokens, disable=quiet) as bar:
        for batch in _batches(pairs):
            encodings = tok.encode_batch_fast([doc for _, doc in batch])  # parallel over all cores, in Rust
            for (is_val, doc), enc in zip(batch, encodings, strict=True):
                writer = val if is_val else train
                counts["read"] += 1
                docs_hash.update(doc.encode("utf-8"))
                n_encoded += len(enc.ids) + 1
                if writer.full:
                    continue
                doc_ids = enc.ids + [ids.eod_id]
                n = writer.write(doc_ids)
                if not is_val:
                    truncated = n < len(doc_ids)
                counts["val" if is_val else "train"] += 1
                bar.advance(n)
            if train.full and val.full:
                break
    seconds = time.perf_counter() - start
    train.close()
    val.close()
    if not train.full:
        raise ConfigError(
            f"data.unique_tokens={cfg.unique_tokens} is larger than the corpus: its training split holds "
            f"only {train.n} tokens; lower data.unique_tokens or add data"
        )
    if not val.full and not quiet:
        print(f"note: validation holds {val.n} tokens, fewer than data.val_tokens={cfg.val_tokens}")
    T = cfg.seq_len
    return {
        "format": 1,
        "unique_tokens": train.n,
        "val_tokens": val.n,
        "seq_len": T,
        "n_train_sequences": -(-train.n // T),
        "n_val_sequences": -(-val.n // T),
        "last_train_document_truncated": truncated,
        "dtype": dtype.name,
        "tokenizer_vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "vocab_size": vocab,
        "eod_id": ids.eod_id,
        "mask_id": ids.mask_id,
        "pad_id": ids.pad_id,
        "documents": counts,
        "documents_sha256": docs_hash.hexdigest(),
        "inputs": [{"path": str(s), "bytes": _size(s)} for s in sources],
        "encode_tokens_per_s": round(n_encoded / max(seconds, 1e-9)),
        "config": to_dict(cfg),
        "unmask_version": __version__,
    }


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
