"""Where a 125M training step's GPU time goes (CUDA): unmask's AR and MDM steps beside the reference GPT, each
compiled, timed (20 steps after 5 warm-ups) and profiled (top kernels by GPU time), built and stepped as
`unmask bench train` does. Prints tables; no files.
    python benchmarks/gpu_profile.py          # --dry: a tiny model on the CPU, to check the script itself
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unmask.bench import build_side

DRY = "--dry" in sys.argv
SHAPE = (
    dict(size="tiny", seq_len=64, batch_size=2, vocab_size=512, device="cpu", compile=False)
    if DRY
    else dict(size="125M", seq_len=1024, batch_size=16, vocab_size=50304, device="cuda", compile=True)
)
CUDA = SHAPE["device"] == "cuda"
sync = torch.cuda.synchronize if CUDA else (lambda: None)

for side in ("reference", "ar", "mdm"):
    try:
        step, runtime, cfg = build_side(side=side, threads=0, **SHAPE)
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
        for i in range(5):
            step(i)
        sync()
        t0 = time.perf_counter()
        for i in range(5, 25):
            step(i)
        sync()
        ms = (time.perf_counter() - t0) / 20 * 1000
        peak = torch.cuda.max_memory_allocated() / 2**20 if CUDA else 0.0
        print(f"\n=== {side}: {ms:.2f} ms/step, peak {peak:,.0f} MiB", flush=True)
        with profile(activities=[ProfilerActivity.CUDA if CUDA else ProfilerActivity.CPU]) as prof:
            for i in range(25, 28):
                step(i)
            sync()
        sort_by = "self_cuda_time_total" if CUDA else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort_by, row_limit=8, max_name_column_width=70))
    except Exception as e:  # a failing side is reported and the next one runs
        print(f"\n=== {side}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        step = None
        if CUDA:
            torch.cuda.empty_cache()
        torch._dynamo.reset()
