"""How much memory importing a checkpoint folder, and then using the run, will take: read from config.json and the
shards' headers, before any tensor is touched (`unmask bench memory --checkpoint FOLDER`).

The import streams one unmask tensor at a time (unmask.hub.files): it holds the process (Python, torch, the
tokenizer) plus, at its largest tensor, that tensor's source pages and each copy the conversion makes of it (a
concatenation of fused parts, a cast, a transposed view made contiguous as it is written; none when the tensor is
written straight from the mapped file). Using the run (`Run.load_model`, then a forward pass) maps the weights
file and reads every page of it: the process plus the file's bytes, plus the cast copy when another dtype is asked
for (the file's pages are clean page cache then, which the OS reclaims under pressure, but they count as
resident). benchmarks/import_memory.py checks both against the measured peak RSS on a 1B-class checkpoint
(docs/open_models.md).
"""

from __future__ import annotations

import gc
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unmask.hub.convert import import_tokenizer, plan_import

LOAD_DTYPES = (torch.float32, torch.bfloat16)


@dataclass
class CheckpointMemory:
    folder: str
    layout: str
    parameters: int
    file_bytes: int
    """The checkpoint's weights as stored (its shards' tensor data)."""
    run_bytes: int
    """The imported run's weights file (in the import's dtype)."""
    largest_tensor: str
    baseline: int
    """Resident memory of this process before the import's own work: Python, torch, unmask (measured here)."""
    tokenizer: int
    """Resident memory the checkpoint's tokenizer adds (measured here, by loading it)."""
    import_peak: int
    load_peak: dict[str, int] = field(default_factory=dict)
    """Using the run (sample, eval, serve): per dtype ('bfloat16', 'float32'), the estimated peak resident memory."""


def current_rss() -> int:
    """This process's resident set now, in bytes (Linux /proc; elsewhere the peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def estimate_checkpoint_memory(
    folder: str | Path, kind: str | None = None, dtype: str | None = None
) -> CheckpointMemory:
    """The estimated peak resident memory of `unmask import FOLDER` (with --as `kind`, --dtype `dtype`) and of
    using the imported run in bf16 and float32; reads headers only (a sparse or partly copied folder works)."""
    folder = Path(folder)
    plan = plan_import(folder, kind, dtype)
    try:
        sources = [sum(plan.shards.nbytes(n) for n in p.hf) for p in plan.pieces]
        copies = [_copies(plan.shards, p, dt) for p, (_, _, dt) in zip(plan.pieces, plan.entries, strict=True)]
    finally:
        plan.shards.close()
    numels = [math.prod(shape) for _, shape, _ in plan.entries]
    outs = [n * dt.itemsize for n, (_, _, dt) in zip(numels, plan.entries, strict=True)]
    gc.collect()
    baseline = current_rss()
    tok = import_tokenizer(folder, plan.hf, plan.cfg, plan.layout, None, None)  # refuses what the import refuses
    tokenizer = max(current_rss() - baseline, 0)
    del tok
    held = [src + out * n for src, out, n in zip(sources, outs, copies, strict=True)]
    largest = max(range(len(held)), key=held.__getitem__)
    run_bytes = sum(outs)
    load = {}
    for dt in LOAD_DTYPES:  # the file's pages, mapped and read, plus a cast's copy (the pages are clean: reclaimable)
        cast = sum(n * dt.itemsize for n, (_, _, run_dt) in zip(numels, plan.entries, strict=True) if run_dt != dt)
        load[str(dt).removeprefix("torch.")] = baseline + run_bytes + cast
    return CheckpointMemory(
        folder=str(folder), layout=plan.layout.name, parameters=sum(numels), file_bytes=sum(sources),
        run_bytes=run_bytes, largest_tensor=plan.entries[largest][0], baseline=baseline, tokenizer=tokenizer,
        import_peak=baseline + tokenizer + max(held), load_peak=load,
    )  # fmt: skip


def _copies(shards, piece, dtype: torch.dtype) -> int:
    """How many new tensors of the output's size writing `piece` makes, replayed on the meta device: the join's
    concatenation, the cast, and the contiguous copy of a reordered (transposed, head-interleaved) view."""
    parts = [torch.empty(shards.shape(n), dtype=shards.dtype(n), device="meta") for n in piece.hf]
    joined = piece.join(parts)
    cast = joined.to(dtype)
    return int(len(parts) > 1) + int(cast.dtype != joined.dtype) + int(not cast.is_contiguous())


def print_checkpoint_memory(memory: CheckpointMemory) -> None:
    from rich.console import Console
    from rich.table import Table

    m = memory

    gib = 2**30
    table = Table(
        title=f"unmask bench memory --checkpoint {m.folder}: {m.layout} layout, {m.parameters / 1e9:.3g}B parameters, "
        f"{m.file_bytes / gib:.2f} GiB of weights; estimated peak resident memory (GiB), this process's "
        f"{m.baseline / gib:.2f} GiB of Python and torch included"
    )
    for column in ("what", "peak (GiB)", "of the weights' bytes"):
        table.add_column(column, justify="left" if column == "what" else "right")
    rows = [(f"unmask import (largest tensor: {m.largest_tensor}, tokenizer {m.tokenizer / 2**20:.0f} MiB)",
             m.import_peak)] + [(f"using the run in {name} (sample, eval, serve)", peak)
                                for name, peak in m.load_peak.items()]  # fmt: skip
    for what, peak in rows:
        table.add_row(what, f"{peak / gib:.2f}", f"{peak / m.file_bytes:.2f}x")
    Console(width=max(Console().width, 120)).print(table)
