"""Safetensors in and out, a tensor at a time: an open checkpoint's shards read through memory maps, a run's
weights written as a stream, so an 8B conversion never holds the model twice.

A folder in Hugging Face's format holds config.json, tokenizer.json and either model.safetensors or shards
listed by model.safetensors.index.json ({"weight_map": {tensor name: shard file}}).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack
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
    """The tensors of a checkpoint folder, by name, each read on demand from its memory-mapped shard."""

    def __init__(self, folder: Path):
        from safetensors import SafetensorError, safe_open

        self.folder, self._stack = folder, ExitStack()
        files = self._shard_files()
        self.where: dict[str, object] = {}  # tensor name -> its open shard
        for file in sorted(set(files)):
            path = folder / file
            if not path.is_file():
                raise ConfigError(f"{path} is missing ({INDEX} lists it); copy the checkpoint folder whole")
            try:
                shard = self._stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            except (SafetensorError, OSError) as e:
                reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
                raise ConfigError(
                    f"{path} is not readable safetensors ({reason}); it is damaged: copy it again"
                ) from None
            for name in shard.keys():
                self.where[name] = shard

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
        return name in self.where

    def shape(self, name: str) -> list[int]:
        return list(self._get(name).get_slice(self._resolve(name)).get_shape())

    def dtype(self, name: str) -> torch.dtype | str:
        """The tensor's dtype (its safetensors name when it is not a float dtype)."""
        found = self._get(name).get_slice(self._resolve(name)).get_dtype()
        return {v: k for k, v in DTYPES.items()}.get(found, found)

    def get(self, name: str) -> torch.Tensor:
        return self._get(self._resolve(name)).get_tensor(self._resolve(name))

    def _resolve(self, name: str) -> str:
        # GPT-2's published file was saved from GPT2Model, without the "transformer." of GPT2LMHeadModel's names
        bare = name.removeprefix("transformer.")
        return bare if name not in self.where and bare in self.where else name

    def _get(self, name: str):
        name = self._resolve(name)
        if name not in self.where:
            raise ConfigError(f"{self.folder}: the checkpoint lacks tensor {name}; the folder is incomplete or damaged")
        return self.where[name]

    def close(self) -> None:
        self._stack.close()


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


def stream(recipes: dict[str, Callable[[], torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The tensors of `recipes`, built one at a time in order."""
    for build in recipes.values():
        yield build()


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
