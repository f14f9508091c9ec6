"""Build unmask's embedded default corpus: Jane Austen's six novels, one JSON line per chapter.

Source: the Debian package ``r-cran-janeaustenr`` (the CRAN package janeaustenr by Julia
Silge, "License: MIT + file LICENSE"; the novels themselves are public-domain Project
Gutenberg texts). Obtain it without installing R::

    apt-get download r-cran-janeaustenr
    dpkg-deb -x r-cran-janeaustenr_*_all.deb x/
    python scripts/extract_austen.py \\
        x/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb -o src/unmask/data/austen.jsonl.gz

File format. ``Rdata.rdx`` (gzip) and every record of ``Rdata.rdb`` hold R XDR
serializations: ``b"X\\n"``, three big-endian ints (format version, writer and minimum
reader R versions), for format 3 a length-prefixed native-encoding name, then one item.
An item is a flags int (low byte = SEXP type, bit 9 = has attributes, bit 10 = has tag,
bits 12+ = "levels", which for strings carry the encoding) followed by its payload. The
.rdx holds a named list whose ``variables`` element maps each object name to an integer
pair (offset, length) into the .rdb. An .rdb record is a 4-byte big-endian *uncompressed*
length followed by a zlib stream. Each novel is a character vector (STRSXP, type 16:
length int, then CHARSXPs of type 9: flags, byte length (-1 = NA), bytes), one element
per printed line of the Gutenberg text.

Output: gzip (mtime=0, level 9, byte-reproducible for a given zlib) of JSON lines
``{"book": ..., "chapter": n, "text": ...}``; chapters are numbered 1..N through each
book, paragraphs are unwrapped (whitespace collapsed) and separated by blank lines.
A sibling ``<stem>.sha256`` file receives the SHA-256 hex digest of the gzip.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

BOOKS = {  # rdx object name -> title, in publication order
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
CHAPTER = re.compile(r"chapter\s+([ivxlc]+|\d+)\.?", re.IGNORECASE)
VOLUME = re.compile(r"volume\s+([ivxlc]+|\d+)\.?", re.IGNORECASE)
# Everything from one of these lines on is dropped ("A NOTE ON THE TEXT" is a
# modern Signet Classic editorial note appended to Northanger Abbey).
END = re.compile(r"the end|finis|a note on the text", re.IGNORECASE)
# Editorial bracketed notes such as "[At this point in the first and second editions, ...]".
EDITORIAL = re.compile(r"\[.*\bedition.*\]", re.IGNORECASE | re.DOTALL)
LATIN1_MASK, UTF8_MASK = 1 << 2, 1 << 3


class RReader:
    """Minimal reader for R's XDR serialization: just the types janeaustenr's files use."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization")
        self.data, self.pos = data, 2
        self.refs: list[Any] = []  # symbols, for REFSXP back-references
        version, _writer, _reader = self.ints(3)
        if version == 3:
            (length,) = self.ints(1)
            self.pos += length  # skip the native-encoding name, e.g. "UTF-8"

    def ints(self, n: int) -> tuple[int, ...]:
        values = struct.unpack_from(f">{n}i", self.data, self.pos)
        self.pos += 4 * n
        return values

    def item(self) -> Any:
        flags = self.ints(1)[0] & 0xFFFFFFFF
        kind, has_attr, has_tag, levels = flags & 0xFF, flags & 1 << 9, flags & 1 << 10, flags >> 12
        if kind == 254:  # NILVALUE_SXP
            return None
        if kind == 255:  # REFSXP: back-reference to an earlier symbol
            return self.refs[(flags >> 8 or self.ints(1)[0]) - 1]
        if kind == 1:  # SYMSXP
            self.refs.append(self.item())
            return self.refs[-1]
        if kind == 2:  # LISTSXP (pairlist), used for attributes: returned as a dict
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car, cdr = self.item(), self.item()
            return {tag: car, **(cdr or {})}
        if kind == 9:  # CHARSXP
            (n,) = self.ints(1)
            if n == -1:
                return None
            raw = self.data[self.pos : self.pos + n]
            self.pos += n
            latin1 = levels & LATIN1_MASK and not levels & UTF8_MASK
            return raw.decode("latin-1" if latin1 else "utf-8")
        (n,) = self.ints(1)
        if kind in (10, 13):  # LGLSXP, INTSXP
            value: Any = list(self.ints(n))
        elif kind in (16, 19):  # STRSXP, VECSXP
            value = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"unsupported SEXP type {kind}")
        if has_attr:
            names = self.item().get("names")
            if names is not None:
                value = dict(zip(names, value, strict=True))
        return value


def read_novels(rdb: Path) -> dict[str, list[str]]:
    """Return {object name: lines} for every novel, located via the sibling .rdx index."""
    index = RReader(gzip.decompress(rdb.with_suffix(".rdx").read_bytes())).item()
    if index["compressed"] not in ([1], [True]):
        raise ValueError("only zlib-compressed lazy-load databases are supported")
    data, novels = rdb.read_bytes(), {}
    for name in BOOKS:
        offset, length = index["variables"][name]
        (size,) = struct.unpack_from(">I", data, offset)
        raw = zlib.decompress(data[offset + 4 : offset + length])
        if len(raw) != size:
            raise ValueError(f"{name}: record decompressed to {len(raw)} bytes, expected {size}")
        novels[name] = RReader(raw).item()
    return novels


def split_chapters(lines: list[str]) -> list[str]:
    """Split a novel's lines at chapter headings; return the unwrapped text of each chapter."""
    chapters: list[list[str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(paragraph).split())
        if text and chapters and not EDITORIAL.fullmatch(text):
            chapters[-1].append(text)
        paragraph.clear()

    for line in lines:
        stripped = (line or "").strip()
        if CHAPTER.fullmatch(stripped) or VOLUME.fullmatch(stripped) or not stripped:
            flush()
            if CHAPTER.fullmatch(stripped):
                chapters.append([])
        elif END.fullmatch(stripped):
            break
        else:
            paragraph.append(stripped)
    flush()
    return ["\n\n".join(paragraphs) for paragraphs in chapters]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rdb", type=Path, help="janeaustenr's data/Rdata.rdb (Rdata.rdx beside it)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .jsonl.gz")
    args = parser.parse_args()

    novels, out = read_novels(args.rdb), io.BytesIO()
    total_chars = 0
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        for name, title in BOOKS.items():
            if novels[name][0].strip().lower() != title.lower():
                raise ValueError(f"{name}: unexpected first line {novels[name][0]!r}")
            chapters = split_chapters(novels[name])
            for number, text in enumerate(chapters, start=1):
                record = {"book": title, "chapter": number, "text": text}
                gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                total_chars += len(text)
            print(f"{title:24} {len(chapters):3} chapters {sum(map(len, chapters)):>9,} chars")
    blob = out.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(blob)
    args.output.with_name(args.output.name.split(".")[0] + ".sha256").write_text(digest + "\n")
    print(f"total: {total_chars:,} characters; {len(blob):,} bytes gzipped; sha256 {digest}")


if __name__ == "__main__":
    main()
