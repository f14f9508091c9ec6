"""Where a 125M training step's GPU time goes (CUDA): unmask's AR and MDM steps beside the reference GPT, each
compiled, timed (20 steps after 5 warm-ups) and profiled (top kernels by GPU time). Prints tables; no files.
    python benchmarks/gpu_profile.py          # --dry: a tiny model on the CPU, to check the script itself
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unmask.bench import optimiser_step
from unmask.config import ModelConfig, TrainConfig
from unmask.model import Transformer
from unmask.objectives import Specials, get_objective
from unmask.reference_gpt import ReferenceGPT, reference_optimizer
from unmask.runtime import Runtime
from unmask.training import make_optimizer

DRY = "--dry" in sys.argv  # a CPU check of this script: a tiny model, no compile
DEVICE, SIZE, (B, T, V) = ("cpu", "tiny", (2, 64, 512)) if DRY else ("cuda", "125M", (16, 1024, 50304))
sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)


def side_step(side: str):
    runtime = Runtime.create(DEVICE, 0, not DRY)
    torch.manual_seed(0)
    x = torch.randint(3, V, (B, T), device=DEVICE)
    cfg = ModelConfig(size=SIZE, vocab_size=V, seq_len=T, causal=side != "mdm")
    if side == "reference":
        model = ReferenceGPT(V, T, cfg.d_model, cfg.n_layer, cfg.n_head).to(DEVICE)
        loss_of = model.loss if DRY else torch.compile(model.loss)
        optimizer = reference_optimizer(model, 6e-4, (0.9, 0.95), 0.1)
        return model, optimizer, lambda: loss_of(x), runtime
    model = Transformer(cfg).to(DEVICE)
    step_model = runtime.prepare_model(model)
    objective = get_objective(side)
    loss_fn = objective.make_loss(TrainConfig(objective=side), T)
    gen = torch.Generator(objective.noise_device(runtime.device)).manual_seed(1)
    sp = Specials(mask_id=1, pad_id=2)
    batch = x.cpu() if objective.host_batches else x

    def loss():
        return loss_fn(step_model, batch, sp, gen).loss_sum / x.numel()

    return model, make_optimizer(model, TrainConfig()), loss, runtime


peak_mib = (lambda: torch.cuda.max_memory_allocated() / 2**20) if DEVICE == "cuda" else (lambda: 0.0)
activity, sort_by = (
    (ProfilerActivity.CUDA, "self_cuda_time_total")
    if DEVICE == "cuda"
    else (ProfilerActivity.CPU, "self_cpu_time_total")
)
for name in ("reference", "ar", "mdm"):
    try:
        model, optimizer, loss, runtime = side_step(name)
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(5):
            optimiser_step(model, optimizer, loss, runtime.autocast())
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            optimiser_step(model, optimizer, loss, runtime.autocast())
        sync()
        ms = (time.perf_counter() - t0) / 20 * 1000
        print(f"\n=== {name}: {ms:.2f} ms/step, peak {peak_mib():,.0f} MiB", flush=True)
        with profile(activities=[activity]) as prof:
            for _ in range(3):
                optimiser_step(model, optimizer, loss, runtime.autocast())
            sync()
        print(prof.key_averages().table(sort_by=sort_by, row_limit=8, max_name_column_width=70))
    except Exception as e:  # a failing variant is reported and the next one runs
        print(f"\n=== {name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        model = optimizer = loss = None
        torch.cuda.empty_cache()
        torch._dynamo.reset()
