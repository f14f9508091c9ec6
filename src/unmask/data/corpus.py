"""Corpus readers: every format becomes a lazy stream of document strings.

Nothing is read before it is needed, so corpora larger than memory stream
through `unmask prepare` with flat memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from unmask.config import ConfigError, DataConfig

DEFAULT_CORPUS = "austen.jsonl.gz"
JSONL_SUFFIXES = {".jsonl", ".json", ".jsonl.gz", ".json.gz"}


def default_corpus_path() -> Path:
    """The embedded corpus: Jane Austen's six novels, one JSON line per chapter."""
    return Path(str(resources.files("unmask.data") / DEFAULT_CORPUS))


def verify_default_corpus() -> None:
    path = default_corpus_path()
    expected = (path.parent / "austen.sha256").read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ConfigError(f"embedded corpus {path} is corrupt (sha256 {actual[:12]}…); reinstall unmask")


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix


def list_sources(inputs: list[str]) -> list[Path]:
    """Expand folders (sorted, recursive) and check that every input exists."""
    if not inputs:
        verify_default_corpus()
        return [default_corpus_path()]
    sources: list[Path] = []
    for name in inputs:
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"input {name} does not exist; check the path (data.inputs)")
        if path.is_dir() and not _is_hf_dataset(path):
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise ConfigError(f"input folder {name} holds no files")
            sources.extend(files)
        else:
            sources.append(path)
    return sources


def _is_hf_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def iter_documents(cfg: DataConfig) -> Iterator[str]:
    """All documents of all inputs, in order; empty documents are skipped."""
    sources = list_sources(cfg.inputs)
    split = resolve_doc_split(cfg.doc_split, sources)
    for path in sources:
        try:
            for doc in _read(path, cfg.text_field, split):
                if doc and not doc.isspace():  # as doc.strip(), without copying a huge document
                    yield doc
        # A damaged file fails mid-stream: BadGzipFile/PermissionError are OSErrors, a cut gzip
        # raises EOFError, corrupt deflate data zlib.error. Each becomes one line naming the file.
        except (OSError, EOFError, zlib.error) as e:
            raise ConfigError(
                f"cannot read input {path}: {one_line(e)}; fix or remove the file (data.inputs)"
            ) from None


def read_utf8_file(path: str | Path, option: str, expected: str) -> str:
    """The whole text of a small file the user named with `option`, or one ConfigError line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option} {path} does not exist or is not a file; pass {expected}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{option} {path} is not UTF-8 (bad byte at offset {e.start}); convert it") from None


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines, or none)."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def resolve_doc_split(doc_split: str, sources: list[Path]) -> str:
    """'auto': one plain-text file splits at blank lines (paragraphs), so that validation gets documents;
    several files are one document each. Any other value is taken as given."""
    if doc_split != "auto":
        return doc_split
    text_files = [p for p in sources if not p.is_dir() and _suffix(p) not in JSONL_SUFFIXES and p.suffix != ".parquet"]
    return "blank" if len(text_files) == 1 else "file"


def _read(path: Path, text_field: str, doc_split: str) -> Iterator[str]:
    if path.is_dir():
        yield from _read_hf_dataset(path, text_field)
    elif _suffix(path) in JSONL_SUFFIXES:
        yield from _read_jsonl(path, text_field)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, text_field)
    else:
        yield from _read_text(path, doc_split)


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(8192)
    if b"\x00" in head:
        raise ConfigError(f"{path} looks binary (it contains NUL bytes); pass text, JSONL or parquet files")
    return opener(path, "rt", encoding="utf-8", errors="strict", newline=None)


def _utf8_guard(path: Path, lines: Iterator[str]) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 (bad byte at offset {e.start} of a read block); "
            f"convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _read_text(path: Path, doc_split: str) -> Iterator[str]:
    with _open_text(path) as f:
        lines = _utf8_guard(path, f)
        if doc_split == "file":
            yield "".join(lines)
            return
        doc: list[str] = []
        for line in lines:
            is_break = not line.strip() if doc_split == "blank" else line.rstrip("\n") == doc_split
            if is_break:
                if doc:
                    yield "".join(doc).strip("\n")
                doc = []
            else:
                doc.append(line)
        if doc:
            yield "".join(doc).strip("\n")


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(_utf8_guard(path, f), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:  # also a 5000-digit number or [[[[... nested too deep
                raise ConfigError(f"{path}:{lineno} is not valid JSON ({getattr(e, 'msg', one_line(e))})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ConfigError(f"{path}:{lineno} has no string field {text_field!r}; set data.text_field")
            yield record[text_field]


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading parquet needs the datasets extra: pip install 'unmask[datasets]'") from None
    try:
        file = pq.ParquetFile(path)
        if text_field not in file.schema_arrow.names:
            raise ConfigError(
                f"{path} has no column {text_field!r} (columns: {file.schema_arrow.names}); set data.text_field"
            )
        for batch in file.iter_batches(columns=[text_field], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if t)
    except pa.ArrowException as e:  # ArrowInvalid (not parquet, corrupt pages) is a ValueError, not an OSError
        raise ConfigError(f"cannot read input {path}: {one_line(e)}; fix or remove the file (data.inputs)") from None


def _read_hf_dataset(path: Path, text_field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "reading a saved HF dataset needs the datasets extra: pip install 'unmask[datasets]'"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged save raises anything from FileNotFoundError to pyarrow errors
        raise ConfigError(f"cannot load the saved dataset {path}: {one_line(e)}; save it again") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if text_field not in ds.column_names:
        raise ConfigError(f"{path} has no column {text_field!r} (columns: {ds.column_names}); set data.text_field")
    for batch in ds.iter(batch_size=1024):
        yield from (t for t in batch[text_field] if t)
