"""`unmask prepare`: corpus → tokenizer → token shards with an exact budget.

Every document is assigned to validation with probability `val_fraction` by a
seeded generator (one draw per document, so the assignment does not depend on
the budgets). Training takes the other documents in order, each followed by the
end-of-document token, until exactly U tokens (the last document truncated);
validation likewise until `val_tokens`. The two are disjoint by construction.
Shards are flat memory-mapped token arrays; chunking into `seq_len` sequences
happens on read (dataset.py). Everything is written to a temporary folder that
is renamed into place only when complete.

Memory stays flat on any input: a long document is encoded in pieces of at most
PIECE_CHARS characters, and reading stops once both budgets are full. The output
folder is only ever replaced if prepare itself wrote it (`_check_out`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer

from unmask import __version__
from unmask.config import ConfigError, DataConfig, to_dict
from unmask.data.corpus import iter_documents, list_sources
from unmask.data.manifest import CHECKED_FILES, PREPARED_FILES, file_identity, looks_prepared
from unmask.data.tokenizer import load_tokenizer, model_vocab_size, special_ids, train_bpe
from unmask.progress import progress_bar

# Tokenizer memory is ~135 bytes per character encoded at once, so both limits below bound the peak.
# A document up to PIECE_CHARS is one piece, encoded exactly as a whole (the embedded corpus's
# chapters are < 0.1 MB): splitting only ever touches documents no real corpus has many of.
PIECE_CHARS = 1_000_000
TOKENIZER_MAX_BYTES = 64_000_000  # BPE training text at most (time and memory), whatever the budget
TOKENIZER_ROUNDS = 4
ENCODE_BATCH_CHARS = 2_000_000  # characters per encode_batch call: enough to keep all cores busy
CHARS_PER_TOKEN = 16  # generous: a batch reads and encodes little past what the budgets still need


def assign_splits(docs: Iterator[str], val_fraction: float, seed: int) -> Iterator[tuple[bool, str]]:
    """(is_validation, document) for each document; fixed by the seed."""
    rng = np.random.default_rng(seed)
    for doc in docs:
        yield bool(rng.random() < val_fraction), doc


def split_pieces(doc: str, limit: int = PIECE_CHARS) -> Iterator[str]:
    """`doc` in pieces of at most `limit` characters; a document within the limit is one piece.

    Each cut falls just before the last whitespace in reach: the byte-level pre-tokenizer
    attaches a space to the word after it, so the pieces split into the same words as the whole.
    """
    start = 0
    while len(doc) - start > limit:
        window = doc[start : start + limit]
        cut = max(window.rfind(c) for c in " \n\t")
        cut = cut if cut > 0 else limit  # no whitespace in reach: cut anywhere
        yield window[:cut]
        start += cut
    yield doc[start:] if start else doc


class Piece(NamedTuple):
    is_val: bool
    text: str
    first: bool  # the document's first piece (counts the document)
    last: bool  # the document's last piece (the end-of-document token follows)


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


def _pieces(pairs: Iterator[tuple[bool, str]], docs_hash, counts: dict) -> Iterator[Piece]:
    """Every document as pieces, in reading order; hashes and counts what was read."""
    for is_val, doc in pairs:
        counts["read"] += 1
        pos = 0
        for text in split_pieces(doc):
            docs_hash.update(text.encode("utf-8"))  # pieces concatenate to the document: same hash
            yield Piece(is_val, text, pos == 0, pos + len(text) == len(doc))
            pos += len(text)


def _batches(pieces: Iterator[Piece], writers: dict[bool, TokenWriter]) -> Iterator[list[Piece]]:
    """Pieces to encode, batched; those of an already full split are read but never encoded.

    A batch holds about as many characters as the budgets still need, so encoding stops soon
    after they are full, even in the middle of a huge document.
    """
    batch, chars = [], 0
    for piece in pieces:
        if writers[piece.is_val].full:
            continue
        batch.append(piece)
        chars += len(piece.text)
        need = sum(w.limit - w.n for w in writers.values())
        if chars >= min(ENCODE_BATCH_CHARS, CHARS_PER_TOKEN * need):
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _tokenizer_texts(cfg: DataConfig, n_bytes: int) -> Iterator[str]:
    """Training-split documents, in pieces, up to n_bytes of UTF-8 (validation never seen)."""
    budget = n_bytes
    for is_val, doc in assign_splits(iter_documents(cfg), cfg.val_fraction, cfg.seed):
        if budget <= 0:
            return
        if is_val:
            continue
        for piece in split_pieces(doc):
            if budget <= 0:
                return
            budget -= len(piece.encode("utf-8"))
            yield piece


def _covered_bytes(cfg: DataConfig, tok) -> int:
    """UTF-8 bytes of the training text that the first U tokens cover under `tok` (the last piece cut pro rata)."""
    need, used = cfg.unique_tokens, 0
    eod = 1  # each document's end-of-document token counts against U too
    for piece in _tokenizer_texts(cfg, TOKENIZER_MAX_BYTES + 1):
        n, b = len(tok.encode(piece).ids) + eod, len(piece.encode("utf-8"))
        if n >= need:
            return used + round(b * need / n)
        need, used = need - n, used + b
    return used


def _check_corpus_holds_the_budget(cfg: DataConfig) -> None:
    """Refuse an impossible budget before training a tokenizer or encoding anything: a token covers at least
    one byte (plus one end-of-document per piece), so a training split of fewer bytes cannot hold U tokens."""
    available, need = 0, min(cfg.unique_tokens, TOKENIZER_MAX_BYTES)
    for piece in _tokenizer_texts(cfg, TOKENIZER_MAX_BYTES):
        available += len(piece.encode("utf-8")) + 1
        if available >= need:
            return  # enough: no need to read on
    raise ConfigError(
        f"data.unique_tokens={cfg.unique_tokens} is larger than the corpus: its training split has only "
        f"{available:,} bytes; lower data.unique_tokens or add data"
    )


def _tokenizer(cfg: DataConfig) -> tuple[Tokenizer, dict]:
    """The tokenizer and how it was made, for the manifest.

    By default the BPE learns from the text that the U unique tokens cover, so the tokenizer counts
    against the data budget: which text that is depends on the tokenizer, so train on a guess, measure
    the bytes U covers, and train again on those until they agree within 1% (two or three rounds).
    """
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer), {"source": "loaded", "path": str(cfg.tokenizer)}
    if cfg.tokenizer_train_bytes is not None:
        n_bytes = cfg.tokenizer_train_bytes
        tok = train_bpe(_tokenizer_texts(cfg, n_bytes), cfg.vocab_size)
        return tok, {"source": "trained", "train_bytes": n_bytes, "rule": "data.tokenizer_train_bytes"}
    n_bytes = min(4 * cfg.unique_tokens, TOKENIZER_MAX_BYTES)  # ~4 bytes per token: a first guess
    for _ in range(TOKENIZER_ROUNDS):
        tok = train_bpe(_tokenizer_texts(cfg, n_bytes), cfg.vocab_size)
        covered = min(_covered_bytes(cfg, tok), TOKENIZER_MAX_BYTES)
        if abs(covered - n_bytes) <= 0.01 * n_bytes:
            break
        n_bytes = covered
    rule = "the text of the U unique tokens" if covered < TOKENIZER_MAX_BYTES else "the first 64 MB of U's text"
    return tok, {"source": "trained", "train_bytes": n_bytes, "unique_token_bytes": covered, "rule": rule}


def prepare(cfg: DataConfig, out: str | Path, overwrite: bool = False, quiet: bool = False) -> Path:
    """Write tokenizer.json, train.bin, val.bin and manifest.json to `out`; returns `out`.

    `out` must be new, empty, or (with `overwrite`) a folder prepare itself wrote: nothing
    else is ever deleted. The new folder is built beside it and swapped in whole.
    """
    out = Path(out)
    target = _check_out(out, overwrite)
    sources = list_sources(cfg.inputs)  # fail on a missing input before any work
    if not next(iter_documents(cfg), None):
        raise ConfigError(f"the corpus is empty: no non-blank document in {[str(s) for s in sources]}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise ConfigError(f"cannot create output {out} ({e.strerror}); choose another --out") from None
    try:
        manifest = _write_shards(cfg, sources, tmp, quiet)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _swap_in(tmp, target)
    except OSError as e:  # disk full, folder removed underneath us, ...
        raise ConfigError(f"writing {out} failed ({e.strerror}); nothing was replaced: free space and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder; gone once swapped in
    return out


def _check_out(out: Path, overwrite: bool) -> Path:
    """The resolved output folder, once prepare may write it; otherwise one ConfigError line.

    Refused always: a folder holding the current one (., .., /), the home folder, a run, and a
    non-empty folder prepare did not write. A prepared folder is replaced only with `overwrite`.
    """
    try:
        target, cwd = out.resolve(), Path.cwd().resolve()
        home = Path(os.path.expanduser("~")).resolve()
        if target == cwd or target in cwd.parents or target == home:
            raise ConfigError(
                f"--out {out} is {target}, the current folder, one above it or the home folder; "
                f"prepare writes its own folder: choose e.g. --out data/NAME"
            )
        if not target.exists():
            return target
        if not target.is_dir():
            raise ConfigError(f"output {out} is a file, not a folder; choose another --out")
        if not any(target.iterdir()):
            return target
        markers = ("checkpoints", "metrics.jsonl", "model.safetensors")
        if (target / "config.json").exists() and (
            any((target / m).exists() for m in markers) or any(target.glob("*.safetensors"))
        ):
            raise ConfigError(f"output {out} is a training run; prepare never replaces one: choose another --out")
        if not looks_prepared(target):
            raise ConfigError(
                f"output {out} is not empty and holds more than prepared data (tokenizer.json, train.bin, "
                f"val.bin, manifest.json); prepare never replaces it: choose another --out"
            )
    except OSError as e:
        raise ConfigError(f"cannot inspect output {out} ({e.strerror}); choose another --out") from None
    if not overwrite:
        raise ConfigError(f"output {out} already exists; pass --overwrite true or choose another --out")
    return target


def _swap_in(new: Path, target: Path) -> None:
    """Rename `new` to `target`. An old folder is first moved aside and deleted only once the new
    one is in place, so a failure at any point leaves complete data at `target`."""
    if not target.exists():
        new.rename(target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.replace(aside)  # onto our empty folder: an atomic rename
    try:
        new.rename(target)
    except OSError:
        aside.replace(target)  # put the old data back
        raise
    for name in PREPARED_FILES:  # _check_out saw nothing else in it
        (aside / name).unlink(missing_ok=True)
    try:
        aside.rmdir()
    except OSError:  # something appeared there meanwhile: not ours to delete
        print(f"note: left {aside}: it holds files prepare did not write", file=sys.stderr)


def _write_shards(cfg: DataConfig, sources: list[Path], tmp: Path, quiet: bool) -> dict:
    _check_corpus_holds_the_budget(cfg)
    tok, tokenizer_info = _tokenizer(cfg)
    tok.save(str(tmp / "tokenizer.json"))
    ids = special_ids(tok)
    vocab = model_vocab_size(tok)
    dtype = np.dtype(np.uint16 if vocab <= 2**16 else np.uint32)
    train = TokenWriter(tmp / "train.bin", cfg.unique_tokens, dtype)
    val = TokenWriter(tmp / "val.bin", cfg.val_tokens, dtype)
    writers = {False: train, True: val}
    counts = {"train": 0, "val": 0, "read": 0}
    truncated = False
    docs_hash = hashlib.sha256()
    start = time.perf_counter()
    n_encoded = 0
    pieces = _pieces(assign_splits(iter_documents(cfg), cfg.val_fraction, cfg.seed), docs_hash, counts)
    with progress_bar("tokenising", total=cfg.unique_tokens + cfg.val_tokens, disable=quiet) as bar:
        for batch in _batches(pieces, writers):
            encodings = tok.encode_batch_fast([p.text for p in batch])  # parallel over all cores, in Rust
            for piece, enc in zip(batch, encodings, strict=True):
                piece_ids = enc.ids + [ids.eod_id] if piece.last else enc.ids
                n_encoded += len(piece_ids)
                writer = writers[piece.is_val]
                if writer.full:
                    continue
                n = writer.write(piece_ids)
                if not piece.is_val:  # cut inside this piece, or the budget ended before the next one
                    truncated = n < len(piece_ids) or (writer.full and not piece.last)
                if piece.first:
                    counts["val" if piece.is_val else "train"] += 1
                bar.advance(n)
            del encodings, enc  # before the next batch is encoded: one batch's encodings in memory, not two
            if train.full and val.full:
                break  # stop reading: nothing more can be used
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
        "tokenizer": tokenizer_info,
        "vocab_size": vocab,
        "eod_id": ids.eod_id,
        "mask_id": ids.mask_id,
        "pad_id": ids.pad_id,
        "documents": counts,
        "documents_sha256": docs_hash.hexdigest(),
        "inputs": [{"path": str(s), "bytes": _size(s)} for s in sources],
        "encode_tokens_per_s": round(n_encoded / max(seconds, 1e-9)),
        "files": {name: file_identity(tmp / name) for name in CHECKED_FILES},  # data identity for runs
        "config": to_dict(cfg),
        "unmask_version": __version__,
    }


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
