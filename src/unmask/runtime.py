"""Where and how a process computes: device, CPU threads, precision, compilation.

The seam where distributed training (rank, world size) will plug in: training, sampling and
evaluation ask the runtime instead of deciding these themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import torch

from unmask.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'; a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return device


def set_threads(n: int) -> None:
    """CPU threads of this process; 0 keeps torch's default (one per core)."""
    if n:
        torch.set_num_threads(n)


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS (CPU training only).

    Every step allocates and frees the same multi-MB activations; by default glibc
    unmaps them and the next step page-faults them back in (seen in profiles as slow
    fill_/log_softmax). Keeping them mapped made the demo-size step ~15% faster.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


@dataclass
class Runtime:
    """Device, precision and compilation of one training process."""

    device: torch.device
    compile: bool
    """torch.compile the model (default: on CUDA only)."""

    @classmethod
    def create(cls, device: str = "auto", threads: int = 0, compile: bool | None = None) -> Runtime:
        dev = resolve_device(device)
        set_threads(threads)
        if dev.type == "cpu":
            keep_freed_memory()
        return cls(dev, dev.type == "cuda" if compile is None else compile)

    @property
    def autocast_enabled(self) -> bool:
        """bf16 autocast on CUDA (fp32 master weights, fp32 losses); full fp32 on the CPU."""
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast_enabled)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop calls: compiled when asked (the uncompiled one keeps the weights)."""
        return torch.compile(model) if self.compile else model
