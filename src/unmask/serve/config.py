"""ServeConfig: the limits and the address of `unmask serve` (no server imports, so the CLI reads it cheaply)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from unmask.config import check

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` binds the loopback interface only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Where the server listens and what it accepts."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default. Any other address needs --token (or --insecure true)."""
    port: int = 8000
    """TCP port (0 = any free port)."""
    token: str | None = None
    """Bearer token the /v1 endpoints require (clients send `Authorization: Bearer TOKEN`); None = no auth."""
    insecure: bool = False
    """Allow a non-loopback address without a token."""
    which: Literal["best", "last"] = "last"
    """Weights of every run: last (final) or best (early-stopped)."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights of every run: auto (each file's own: an imported bf16 run stays bf16, half float32's memory),
    float32 or bfloat16."""
    threads: int = 0
    """torch CPU threads for generation; 0 = torch's default."""
    max_batch: int = 8
    """Sequences decoded at once (the cap on concurrent generations); requests that arrive together share it."""
    max_queue: int = 32
    """Requests that may wait for a batch; beyond it a request is refused with 429 and Retry-After."""
    batch_window_ms: float = 20.0
    """How long the first request of a batch waits for others to join it (dynamic batching)."""
    timeout: float = 60.0
    """Seconds a request may take, queueing included: 503 if it never started, 504 if decoding ran over."""
    max_tokens: int = 256
    """Largest max_tokens a request may ask for (MDM runs are further bounded by their seq_len)."""
    max_prompt_chars: int = 16_384
    """Longest prompt / infill text, in characters."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 beyond it)."""

    def __post_init__(self) -> None:
        check(0 <= self.port <= 65535, f"port={self.port}: must be in [0, 65535]")
        check(self.token is None or len(self.token) >= 8, "token: use at least 8 characters")
        check(
            is_loopback(self.host) or self.token is not None or self.insecure,
            f"host={self.host!r} is not loopback: anyone who reaches it could use the runs; pass --token SECRET "
            "(or set UNMASK_SERVE_TOKEN) or --insecure true",
        )
        check(
            self.dtype in ("auto", "float32", "bfloat16"),
            f"dtype={self.dtype!r}: choose one of auto, float32, bfloat16",
        )
        check(0 <= self.threads <= 4096, f"threads={self.threads}: must be in [0, 4096] (0 = torch's default)")
        check(1 <= self.max_batch <= 4096, f"max_batch={self.max_batch}: must be in [1, 4096]")
        check(0 <= self.max_queue <= 1_000_000, f"max_queue={self.max_queue}: must be in [0, 1000000]")
        check(0 <= self.batch_window_ms <= 10_000, f"batch_window_ms={self.batch_window_ms}: must be in [0, 10000]")
        check(0 < self.timeout <= 86_400, f"timeout={self.timeout}: must be in (0, 86400] seconds")
        check(1 <= self.max_tokens <= 1 << 20, f"max_tokens={self.max_tokens}: must be in [1, 1048576]")
        check(self.max_prompt_chars >= 1, f"max_prompt_chars={self.max_prompt_chars}: must be >= 1")
        check(self.max_body_bytes >= 1024, f"max_body_bytes={self.max_body_bytes}: must be >= 1024")
