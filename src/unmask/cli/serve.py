"""`unmask serve RUN…`: the HTTP API and the live-denoising page (the serve extra, imported only here)."""

from __future__ import annotations

import os
from typing import Literal

from unmask.config import ConfigError, check


def serve(
    runs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure: bool = False,
    which: Literal["best", "last"] = "last",
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    threads: int = 0,
    max_batch: int = 8,
    max_queue: int = 32,
    batch_window_ms: float = 20.0,
    timeout: float = 60.0,
    max_tokens: int = 256,
) -> None:
    """Serve runs over HTTP: OpenAI-style completions, infilling, live denoising streams and a web page at /.

    `unmask serve RUN [RUN ...]` loads each run directory read-only (safetensors) under its folder name and
    serves them until interrupted. Needs the serve extra: pip install -e '.[serve]'.

    Args:
        runs: Run directories (AR and MDM runs alike).
        host: Address to bind (loopback by default; any other needs --token or --insecure true).
        port: TCP port.
        token: Bearer token the /v1 endpoints require (default: $UNMASK_SERVE_TOKEN, else none).
        insecure: Allow a non-loopback --host without a token.
        which: Weights of every run: last (final) or best (early-stopped).
        device: 'auto', 'cpu' or 'cuda'.
        dtype: Weights of every run: auto (each file's own: an imported bf16 run stays bf16), float32 or bfloat16.
        threads: torch CPU threads for generation; 0 = torch's default.
        max_batch: Sequences decoded at once; requests that arrive together share one batch.
        max_queue: Requests that may wait; beyond it 429 with Retry-After.
        batch_window_ms: How long a batch's first request waits for others to join.
        timeout: Seconds a request may take, queueing included (503 never started, 504 ran over).
        max_tokens: Largest max_tokens a request may ask for.
    """
    from unmask.serve.config import ServeConfig

    cfg = ServeConfig(
        host=host,
        port=port,
        token=token if token is not None else os.environ.get("UNMASK_SERVE_TOKEN") or None,
        insecure=insecure,
        which=which,
        device=device,
        dtype=dtype,
        threads=threads,
        max_batch=max_batch,
        max_queue=max_queue,
        batch_window_ms=batch_window_ms,
        timeout=timeout,
        max_tokens=max_tokens,
    )
    check(len(runs) > 0, "serve needs at least one run directory: unmask serve RUN [RUN ...]")
    try:
        from unmask.serve.app import serve as serve_runs
    except ImportError as e:
        raise ConfigError(f"unmask serve needs the serve extra ({e.name} is missing): pip install '.[serve]'") from None
    serve_runs(runs=list(runs), cfg=cfg)
