"""The manifest of a prepared data folder: what it must hold, and how a damaged one is named.

A folder that `unmask prepare` wrote holds exactly PREPARED_FILES. Its manifest.json
records the token counts, the special ids and, since the "files" key was added, the
size and SHA-256 of every other file, so a run can tell that its data changed. Every
check here fails with one ConfigError line naming the file and the fix: a damaged
folder must never surface as a numpy or JSON traceback halfway through training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from unmask.config import MAX_SEQ_LEN, ConfigError

TOKEN_FILES = ("train.bin", "val.bin")
CHECKED_FILES = (*TOKEN_FILES, "tokenizer.json")  # the files whose size and SHA-256 the manifest records
PREPARED_FILES = (*CHECKED_FILES, "manifest.json")
DTYPES = {"uint16": 2, "uint32": 4}  # token dtype: bytes per token
INT_FIELDS = ("seq_len", "pad_id", "mask_id", "eod_id", "vocab_size", "unique_tokens", "val_tokens")
REDO = "prepare it again (unmask prepare --overwrite true)"


def file_identity(path: Path) -> dict:
    """{"bytes", "sha256"} of a file, hashed in streamed blocks (flat memory for any size)."""
    digest, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # hashlib.file_digest needs Python 3.11
            digest.update(block)
            n += len(block)
    return {"bytes": n, "sha256": digest.hexdigest()}


def looks_prepared(folder: Path) -> bool:
    """Whether `folder` holds only prepare's own files, with a manifest that prepare wrote.

    Deliberately loose about the values (a damaged prepared folder may still be replaced),
    strict about anything else being there (that would be someone else's data).
    """
    entries = list(folder.iterdir())
    if not all(p.name in PREPARED_FILES and p.is_file() and not p.is_symlink() for p in entries):
        return False
    try:
        m = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(m, dict) and {"format", "unique_tokens", "val_tokens", "mask_id", "dtype"} <= m.keys()


def read_manifest(folder: Path) -> tuple[dict, bytes]:
    """The checked manifest of a prepared folder and its raw bytes (for its checksum)."""
    if not folder.exists():
        raise ConfigError(f"data folder {folder} does not exist; run unmask prepare --out {folder}")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a prepared data folder; pass the folder unmask prepare wrote")
    path = folder / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a prepared data folder (no manifest.json); run unmask prepare")
    try:
        raw = path.read_bytes()
        m = json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, 5000-digit numbers
        reason = getattr(e, "msg", None) or getattr(e, "strerror", None) or type(e).__name__
        raise ConfigError(f"{path} is unreadable or not JSON ({reason}); {REDO}") from None
    if not isinstance(m, dict):
        raise ConfigError(f"{path} is not a JSON object; {REDO}")
    missing = [k for k in (*INT_FIELDS, "dtype") if k not in m]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; {REDO}")

    def bad(key: str, must: str) -> ConfigError:
        return ConfigError(f"{path}: {key}={_short(m[key])} {must}; {REDO}")

    for key in INT_FIELDS:
        if not isinstance(m[key], int) or isinstance(m[key], bool):
            raise bad(key, "must be an integer")
    if not isinstance(m["dtype"], str) or m["dtype"] not in DTYPES:  # a list or dict is not even hashable
        raise bad("dtype", f"must be one of {', '.join(DTYPES)}")
    if not 2 <= m["seq_len"] <= MAX_SEQ_LEN:
        raise bad("seq_len", f"must be in [2, {MAX_SEQ_LEN}]")
    if not 1 <= m["vocab_size"] <= 2**32:
        raise bad("vocab_size", "must be in [1, 2**32]")
    for key in ("pad_id", "mask_id", "eod_id"):
        if not 0 <= m[key] < m["vocab_size"]:
            raise bad(key, f"must be in [0, vocab_size={m['vocab_size']})")
    if len({m["pad_id"], m["mask_id"], m["eod_id"]}) < 3:
        raise ConfigError(f"{path}: pad_id, mask_id and eod_id must differ; {REDO}")
    if m["unique_tokens"] < 1:
        raise bad("unique_tokens", "must be >= 1")
    if m["val_tokens"] < 0:
        raise bad("val_tokens", "must be >= 0")
    if "files" in m:
        _check_files_entry(path, m["files"])
    return m, raw


def _check_files_entry(path: Path, files: object) -> None:
    # Only known names: a hand-edited "../elsewhere" must not make verify() hash other files.
    ok = isinstance(files, dict) and all(
        name in CHECKED_FILES
        and isinstance(rec, dict)
        and isinstance(rec.get("bytes"), int)
        and not isinstance(rec["bytes"], bool)
        and rec["bytes"] >= 0
        and isinstance(rec.get("sha256"), str)
        and len(rec["sha256"]) == 64
        for name, rec in files.items()
    )
    if not ok:
        raise ConfigError(f"{path}: 'files' must map {', '.join(CHECKED_FILES)} to {{bytes, sha256}}; {REDO}")


def open_tokens(folder: Path, m: dict, split: str) -> np.ndarray:
    """The split's tokens, memory-mapped, once its file size agrees exactly with the manifest."""
    n, dtype = m["unique_tokens" if split == "train" else "val_tokens"], m["dtype"]
    path = folder / f"{split}.bin"
    if n == 0 and not path.exists():
        return np.zeros(0, dtype)
    check_size(path, n * DTYPES[dtype], f"{n} {dtype} tokens")
    if n == 0:
        return np.zeros(0, dtype)
    try:
        return np.memmap(path, dtype=dtype, mode="r")
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} ({type(e).__name__}: {e}); {REDO}") from None


def check_size(path: Path, expected: int, what: str = "") -> None:
    """Refuse a missing, non-file or wrongly sized file, naming both sizes."""
    says = f"{what} ({expected:,} bytes)" if what else f"{expected:,} bytes"
    if not path.exists():
        raise ConfigError(f"{path} is missing (manifest.json says {says}); {REDO}")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file (manifest.json says {says}); {REDO}")
    size = path.stat().st_size
    if size != expected:
        state = "is empty" if size == 0 else f"holds {size:,} bytes"
        raise ConfigError(f"{path} {state} but manifest.json says {says}: truncated or replaced; {REDO}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
