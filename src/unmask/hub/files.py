"""Safetensors in and out, a tensor at a time: an open checkpoint's shards read through memory maps, a run's
weights written as a stream, so an 8B conversion never holds the model twice.

A folder in Hugging Face's format holds config.json, tokenizer.json and either model.safetensors or shards
listed by model.safetensors.index.json ({"weight_map": {tensor name: shard file}}).
"""

from __future__ import annotations

import ctypes
import functools
import json
import mmap
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from unmask.config import ConfigError

INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
"""The safetensors names of the float dtypes weights come in."""


def read_json(path: Path, what: str) -> dict:
    """A JSON object of an open checkpoint's folder, or one ConfigError line naming it."""
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {what}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path} is not valid JSON ({type(e).__name__}): {what}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is not a JSON object: {what}")
    return value


class Shards:
    """The tensors of a checkpoint folder, by name, each a view into its memory-mapped shard (no copy), whose pages
    are handed back to the OS once used (`release`): a conversion holds about one tensor, never the model."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.where: dict[str, tuple[mmap.mmap, dict]] = {}  # tensor name -> (its shard's map, its header entry)
        self._maps: list[mmap.mmap] = []
        self._used: list[tuple[mmap.mmap, int, int]] = []
        for file in sorted(set(self._shard_files())):
            path = folder / file
            if not path.is_file():
                raise ConfigError(f"{path} is missing ({INDEX} lists it); copy the checkpoint folder whole")
            self._open(path)

    def _open(self, path: Path) -> None:
        """Map one shard: an 8-byte header length, a JSON header {name: {dtype, shape, data_offsets}}, the data."""
        size = path.stat().st_size
        with open(path, "rb") as f:
            try:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n)) if 8 + n <= size else None
            except (struct.error, ValueError, RecursionError):
                header = None
            if not isinstance(header, dict):
                raise ConfigError(f"{path} is not readable safetensors (no valid header); it is damaged: copy it again")
            header.pop("__metadata__", None)
            ends = [e.get("data_offsets", [0, 0])[1] if isinstance(e, dict) else -1 for e in header.values()]
            if any(not isinstance(end, int) or end < 0 for end in ends) or 8 + n + max(ends, default=0) > size:
                raise ConfigError(
                    f"{path} is not readable safetensors (its data ends before the header says); it is damaged or "
                    f"truncated: copy it again"
                )
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private: writable views, file pages
        self._maps.append(mapped)
        for name, entry in header.items():
            self.where[name] = (mapped, {**entry, "start": 8 + n + entry["data_offsets"][0]})

    def _shard_files(self) -> list[str]:
        if (self.folder / INDEX).is_file():
            weight_map = read_json(self.folder / INDEX, "the checkpoint's shard index").get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                raise ConfigError(f"{self.folder / INDEX} has no 'weight_map' of tensor names to files; it is damaged")
            return list(weight_map.values())
        if (self.folder / SINGLE).is_file():
            return [SINGLE]
        raise ConfigError(f"{self.folder} holds neither {SINGLE} nor {INDEX}: not a safetensors checkpoint folder")

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) in self.where

    def shape(self, name: str) -> list[int]:
        return list(self._entry(name)[1]["shape"])

    def nbytes(self, name: str) -> int:
        begin, end = self._entry(name)[1]["data_offsets"]
        return end - begin

    def dtype(self, name: str) -> torch.dtype | str:
        """The tensor's dtype (its safetensors name when it is not a float dtype)."""
        found = self._entry(name)[1]["dtype"]
        return {v: k for k, v in DTYPES.items()}.get(found, found)

    def get(self, name: str) -> torch.Tensor:
        """The tensor as a view into the mapped file (valid until `release`)."""
        mapped, entry = self._entry(name)
        begin, end = entry["data_offsets"]
        dtype = self.dtype(name)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"{self.folder}: tensor {name} is {dtype}; unmask imports float weights only")
        self._used.append((mapped, entry["start"], end - begin))
        if end == begin:
            return torch.empty(entry["shape"], dtype=dtype)
        raw = torch.frombuffer(mapped, dtype=torch.uint8, count=end - begin, offset=entry["start"])
        return raw.view(dtype).reshape(entry["shape"])

    def release(self) -> None:
        """Hand the pages of every tensor read so far back to the OS (they are read again if used again)."""
        for mapped, start, length in self._used:
            page = start - start % mmap.PAGESIZE
            if hasattr(mapped, "madvise"):  # Linux, macOS
                mapped.madvise(mmap.MADV_DONTNEED, page, start + length - page)
        self._used.clear()
        _trim_heap()

    def _resolve(self, name: str) -> str:
        # GPT-2's published file was saved from GPT2Model, without the "transformer." of GPT2LMHeadModel's names
        bare = name.removeprefix("transformer.")
        return bare if name not in self.where and bare in self.where else name

    def _entry(self, name: str):
        if self._resolve(name) not in self.where:
            raise ConfigError(f"{self.folder}: the checkpoint lacks tensor {name}; the folder is incomplete or damaged")
        return self.where[self._resolve(name)]

    def close(self) -> None:
        self._used.clear()
        for mapped in self._maps:
            try:
                mapped.close()
            except BufferError:  # a tensor still views it (an error on the way): the map closes when that goes
                pass


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS. glibc serves the conversion's copies (a concatenated qkv, a cast) of
    up to 32 MiB from its heap once a large one has been freed, and keeps them when freed: on a 953M-parameter
    import the resident floor crept up by ~8 MB per block (peak 0.55 GiB), 0.43 GiB with this."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def write_streamed(
    path: Path, entries: list[tuple[str, list[int], torch.dtype]], tensors: Iterator[torch.Tensor], metadata=None
) -> None:
    """Write a safetensors file whose header `entries` (name, shape, dtype) is known before its data, each tensor
    taken from `tensors` in the same order and dropped once written: the memory held is one tensor's.
    Atomic: written beside `path`, then renamed."""
    header, offset = {}, 0
    for name, shape, dtype in entries:
        size = dtype.itemsize * _numel(shape)
        header[name] = {"dtype": DTYPES[dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes, so every tensor stays aligned
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for (name, shape, dtype), tensor in zip(entries, tensors, strict=True):
            if list(tensor.shape) != shape or tensor.dtype != dtype:
                raise AssertionError(f"{name}: {list(tensor.shape)} {tensor.dtype}, the header says {shape} {dtype}")
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy: the buffer itself
    tmp.replace(path)


def stream(recipes: dict[str, Callable[[], torch.Tensor]], done: Callable[[], None] = lambda: None):
    """The tensors of `recipes`, built one at a time in order; `done` runs after each has been written."""
    for build in recipes.values():
        yield build()
        done()


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
