"""`unmask bench`: throughput figures (printed, never asserted in tests)."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unmask.config import DataConfig, MdmConfig, ModelConfig, TrainConfig
from unmask.model import Transformer, count_params
from unmask.objectives import Batch, LossOutput, Specials, get_objective, objective_for
from unmask.runtime import Runtime
from unmask.training import make_optimizer
from unmask.training.step import accumulate_gradients, apply_update

PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    # Dense bf16 tensor-core peaks from the vendors' datasheets, matched as a substring of the device name
    # (the first match wins, so the longer names come first). Override with --peak_tflops.
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("MI300X", 1307.0),
]


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """The device's dense bf16 peak in FLOP/s: the override, else the table entry of its name; None on CPUs
    and unknown accelerators (no MFU is printed then)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the model's training FLOPs per second over the device's peak."""
    return None if not peak else tokens_per_s * flops_per_token / peak


SIDES = ("ar", "mdm", "reference")
"""unmask's AR step, its MDM step, and the nanoGPT-style reference (unmask.reference_gpt) at the same shape."""


def time_side(
    side: str, size: str, seq_len: int, batch_size: int, vocab_size: int, steps: int, warmup: int, threads: int,
    device: str, compile: bool,
) -> dict:  # fmt: skip
    """One side's training step timed in this process: forward, backward, clip, AdamW, on a fixed batch.

    Every side gets the same process settings (threads, allocator, seed, warm-up): the process is set up before
    the side is known."""
    import resource

    from unmask.model import flops_per_token

    step, runtime, cfg = build_side(side=side, size=size, seq_len=seq_len, batch_size=batch_size,
                                    vocab_size=vocab_size, threads=threads, device=device, compile=compile)  # fmt: skip
    sync = torch.cuda.synchronize if runtime.device.type == "cuda" else (lambda: None)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
        step(i)
    sync()
    seconds = (time.perf_counter() - start) / steps
    cpu_seconds = (time.process_time() - cpu_start) / steps  # this process's CPU time: robust to other load
    if runtime.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(runtime.device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (KiB on Linux)
    # Executed FLOPs: MDM projects only its masked positions to the vocabulary (E[p] = 1/2 of them); the
    # reference's learned positions are a lookup, so it does the AR side's work.
    fpt = flops_per_token(cfg, head_fraction=0.5 if side == "mdm" else 1.0)
    tokens = batch_size * seq_len
    return {
        "ms_per_step": 1000 * seconds, "tokens_per_s": tokens / seconds, "flops_per_token": fpt,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "peak_memory_mb": peak_mb, "device_name": _device_name(runtime.device),
    }  # fmt: skip


def build_side(
    *, side: str, size: str, seq_len: int, batch_size: int, vocab_size: int, threads: int, device: str,
    compile: bool,
) -> tuple[Callable[[int], None], Runtime, ModelConfig]:  # fmt: skip
    """(step(i): one training step of `side` on a fixed random batch, the runtime, the model config).

    Each side builds AdamW (same hyper-parameters) as its own code does: unmask's make_optimizer (fused, also on
    CPUs) and the reference's nanoGPT rule (fused on CUDA only, foreach on CPUs)."""
    from unmask.reference_gpt import ReferenceGPT, reference_optimizer

    runtime = Runtime.create(device, threads, compile)
    torch.manual_seed(0)
    x = torch.randint(3, vocab_size, (batch_size, seq_len), device=runtime.device)
    cfg = ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len, causal=side != "mdm")
    train_cfg = TrainConfig(objective="ar" if side == "reference" else side)
    if side == "reference":
        model = ReferenceGPT(vocab_size, seq_len, cfg.d_model, cfg.n_layer, cfg.n_head).to(runtime.device)
        reference_loss = torch.compile(model.loss) if runtime.compile else model.loss

        def loss_fn(model, batch, sp, generator) -> LossOutput:  # its mean loss as a sum, as unmask's losses give
            return LossOutput(reference_loss(batch.tokens) * batch.tokens.numel(), batch.tokens.numel())

        step_model, batch = model, Batch(x)
        optimizer = reference_optimizer(
            model, train_cfg.optim.lr, (train_cfg.optim.beta1, train_cfg.optim.beta2), train_cfg.optim.weight_decay
        )
    else:
        model = Transformer(cfg).to(runtime.device)
        step_model = runtime.prepare_model(model)
        objective = objective_for(train_cfg)
        loss_fn = objective.loss
        batch = Batch(x.cpu() if objective.host_batches else x)  # as the training loop hands it over
        optimizer = make_optimizer(model, train_cfg.optim)
    generator = torch.Generator(get_objective(train_cfg.objective).noise_device(runtime.device))
    sp = Specials(mask_id=1, pad_id=2)

    def step(i: int) -> None:
        timed_step(step_model=step_model, model=model, optimizer=optimizer, loss_fn=loss_fn, batch=batch, sp=sp,
                   generator=generator, runtime=runtime, step=i)  # fmt: skip

    return step, runtime, cfg


def timed_step(
    *, step_model: torch.nn.Module, model: torch.nn.Module, optimizer, loss_fn, batch: Batch, sp: Specials,
    generator: torch.Generator, runtime: Runtime, step: int, check_finite: bool = True,
) -> None:  # fmt: skip
    """One training step as the loop takes it (unmask.training.step): the loss under the runtime's autocast,
    backward, the loss read for the log and the finite check (check_finite), clipping at 1, the optimiser."""
    loss_sum = accumulate_gradients(
        model=step_model, micro_batches=[(0, 1.0, batch)], loss_fn=loss_fn, specials=sp, generator=generator,
        runtime=runtime, seed=0, step=step, n_step=batch.tokens.numel(),
    )  # fmt: skip
    loss = float(loss_sum) / batch.tokens.numel() if check_finite else None
    apply_update(parameters=list(model.parameters()), optimizer=optimizer, grad_clip=1.0, loss=loss)


def _device_name(device: torch.device) -> str:
    import platform

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()}"


def _time_in_fresh_process(side: str, **kwargs) -> dict:
    """time_side in a new Python process: process-wide settings (allocator, threads) cannot leak between sides,
    and each side pays the same start-up."""
    import subprocess
    import sys

    code = f"import json; from unmask.bench import time_side; print(json.dumps(time_side({side!r}, **{kwargs!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        from unmask.config import UnmaskError

        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UnmaskError(f"bench train: the {side} process failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_train(
    size: str = "demo", seq_len: int = 64, batch_size: int = 16, vocab_size: int = 1024, steps: int = 30,
    threads: int = 1, device: str = "cpu", compile: bool = False, against: str = "none", repeats: int = 5,
    warmup: int = 5, peak_tflops: float | None = None, quiet: bool = False,
) -> dict:  # fmt: skip
    """Training tokens/s, ms/step, peak memory and MFU of AR and MDM; with against='reference', also the
    nanoGPT-style reference, run interleaved (the order rotates every repeat) in fresh processes with identical
    settings, and the paired ratios unmask / reference per repeat (median and range), raw and FLOP-normalised."""
    import statistics

    from unmask.runtime import resolve_device

    sides = [side for side in SIDES if side != "reference" or against == "reference"]
    setting = dict(size=size, seq_len=seq_len, batch_size=batch_size, vocab_size=vocab_size, steps=steps,
                   warmup=warmup, threads=threads, device=device, compile=compile)  # fmt: skip
    times: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(repeats):
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            times[side].append(_time_in_fresh_process(side, **setting))
    peak = peak_flops(resolve_device(device), peak_tflops) if device != "cpu" or peak_tflops else None
    result: dict = {"setting": setting, "repeats": repeats, "peak_flops": peak, "torch": torch.__version__}
    result["sides"] = {}
    for side, runs in times.items():
        tps = [t["tokens_per_s"] for t in runs]
        result["sides"][side] = {
            "tokens_per_s": statistics.median(tps), "tokens_per_s_range": [min(tps), max(tps)],
            "ms_per_step": statistics.median(t["ms_per_step"] for t in runs),
            "peak_memory_mb": max(t["peak_memory_mb"] for t in runs), "flops_per_token": runs[0]["flops_per_token"],
            "mfu": mfu(statistics.median(tps), runs[0]["flops_per_token"], peak),
        }  # fmt: skip
    result["device_name"] = times["ar"][0]["device_name"]
    if against == "reference":
        ref = times["reference"]
        for side in ("ar", "mdm"):
            ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(times[side], ref, strict=True)]
            per_flop = [q * times[side][0]["flops_per_token"] / ref[0]["flops_per_token"] for q in ratios]
            cpu = [a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"] for a, b in zip(times[side], ref, strict=True)]
            cpu_per_flop = [q * times[side][0]["flops_per_token"] / ref[0]["flops_per_token"] for q in cpu]
            result["sides"][side]["vs_reference"] = {
                "median": statistics.median(ratios), "range": [min(ratios), max(ratios)],
                "per_flop_median": statistics.median(per_flop), "per_flop_range": [min(per_flop), max(per_flop)],
                "cpu_time_median": statistics.median(cpu), "cpu_time_range": [min(cpu), max(cpu)],
                "cpu_time_per_flop_median": statistics.median(cpu_per_flop),
                "cpu_time_per_flop_range": [min(cpu_per_flop), max(cpu_per_flop)],
            }  # fmt: skip
    if not quiet:
        print_train_table(result)
    return result


def print_train_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    params = count_params(ModelConfig(size=s["size"], vocab_size=s["vocab_size"], seq_len=s["seq_len"]))
    table = Table(
        title=f"unmask bench train: size {s['size']} ({params / 1e6:.2f}M params), batch {s['batch_size']}x"
        f"{s['seq_len']}, {result['device_name']}, {s['threads'] or 'default'} thread(s), compile {s['compile']}, "
        f"median of {result['repeats']} interleaved repeats, torch {result['torch']}"
    )
    columns = ["side", "tokens/s (range)", "ms/step", "peak MB", "MFU", "vs reference (range)", "per FLOP (range)",
               "by CPU time (range)", "CPU time per FLOP"]  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "side" else "right")
    for side, r in result["sides"].items():
        lo, hi = r["tokens_per_s_range"]
        vs = r.get("vs_reference")
        table.add_row(
            side, f"{r['tokens_per_s']:,.0f} ({lo:,.0f}-{hi:,.0f})", f"{r['ms_per_step']:.2f}",
            f"{r['peak_memory_mb']:,.0f}", "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
            _ratio(vs, "median", "range"), _ratio(vs, "per_flop_median", "per_flop_range"),
            _ratio(vs, "cpu_time_median", "cpu_time_range"),
            _ratio(vs, "cpu_time_per_flop_median", "cpu_time_per_flop_range"),
        )  # fmt: skip
    Console(width=max(Console().width, 160)).print(table)


MEMORY_KINDS = {
    "Parameter": "parameters", "Gradient": "gradients", "Optstate": "optimizer", "Activation": "activations",
    "Temp": "temporaries", "Buffer": "buffers", "Other": "other",
}  # fmt: skip
"""MemTracker's kinds of tensor memory, by the names this module reports them under."""


def step_memory(model: torch.nn.Module, objective: str, batch_size: int, seq_len: int) -> dict[str, int]:
    """Bytes of tensor memory at the peak of a training step of `model`, by kind (MEMORY_KINDS) and in 'total'.

    The real step — the objective's loss under bf16 autocast, backward, gradient clipping, make_optimizer's AdamW —
    runs twice (the second step holds the Adam moments too) while torch's MemTracker counts every tensor as it is
    created and freed. MDM runs with every position masked (mdm_eps -> 1): the most a step can hold, which the AR
    step matches; a typical step masks half (stratified noise levels)."""
    from unmask.runtime import model_device

    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as e:
        from unmask.config import UnmaskError

        raise UnmaskError(f"bench memory needs torch's MemTracker (torch >= 2.5 with torch.distributed; this is "
                          f"torch {torch.__version__}): {e}") from None  # fmt: skip
    train_cfg = TrainConfig(objective=objective, mdm=MdmConfig(eps=1 - 1e-9))
    optimizer = make_optimizer(model, train_cfg.optim)
    loss_fn = objective_for(train_cfg).loss
    tokens = torch.randint(3, model.cfg.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    device = model_device(model)

    runtime = Runtime(device, compile=False, bf16=True)  # the GPU's precision, traced on any device
    generator, sp = torch.Generator(), Specials(mask_id=1, pad_id=2)
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        for _ in range(2):
            tracker.reset_mod_stats()  # per-module figures are per step; the peak is kept
            # fake tensors cannot be read: no finite check (the real step reads one scalar)
            timed_step(step_model=model, model=model, optimizer=optimizer, loss_fn=loss_fn, batch=Batch(tokens), sp=sp,
                       generator=generator, runtime=runtime, step=0, check_finite=False)  # fmt: skip
    peak = tracker.get_tracker_snapshot("peak")[device]
    by_kind = {MEMORY_KINDS[kind.value]: n for kind, n in peak.items() if kind != "Total"}
    return {**by_kind, "total": peak["Total"]}


def estimate_step_memory(
    cfg: ModelConfig, objective: str, batch_size: int, activation_checkpointing: bool = False
) -> dict[str, int]:
    """step_memory of a model of `cfg` without allocating it, on any machine: the model and every tensor the step
    makes from it are fake (torch's FakeTensorMode: shapes and dtypes, no storage), so a 350M model at sequence
    2048 is estimated in about 35 s on two CPU cores. Attention dispatches to the flash kernel, which keeps O(T)
    per head as the GPU kernels do; the figure is eager mode's (torch.compile usually keeps fewer activations),
    without the CUDA context, library workspaces or the caching allocator's fragmentation."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.device("meta"):
        model = Transformer(cfg)
    model.activation_checkpointing = activation_checkpointing
    # The host batch and the losses' host-side work stay real; everything derived from the fake weights is fake.
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
    return step_memory(model.train(), "ar" if cfg.causal else "mdm", batch_size, cfg.seq_len)


def bench_memory(size: str, seq_len: int, batch_size: int, vocab_size: int, activation_checkpointing: bool,
                 quiet: bool = False) -> dict:  # fmt: skip
    """Estimated peak tensor memory of one AR and one MDM training step at a size (estimate_step_memory)."""
    from unmask.progress import progress_bar

    setting = dict(size=size, seq_len=seq_len, batch_size=batch_size, vocab_size=vocab_size,
                   activation_checkpointing=activation_checkpointing)  # fmt: skip
    result: dict = {"setting": setting, "torch": torch.__version__, "sides": {}}
    with progress_bar("tracing training steps", total=2, disable=quiet) as bar:
        for side in ("ar", "mdm"):
            bar.update(info=side)
            cfg = ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len, causal=side == "ar")
            result["sides"][side] = estimate_step_memory(cfg, side, batch_size, activation_checkpointing)
            bar.advance()
    result["params"] = count_params(cfg)
    if not quiet:
        print_memory_table(result)
    return result


def print_memory_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    big = max(mem["total"] for mem in result["sides"].values()) >= 2**30
    unit, scale = ("GiB", 2**30) if big else ("MiB", 2**20)
    table = Table(
        title=f"unmask bench memory: size {s['size']} ({result['params'] / 1e6:.1f}M params), micro-batch "
        f"{s['batch_size']}x{s['seq_len']}, vocab {s['vocab_size']}, bf16 autocast, fused AdamW, activation "
        f"checkpointing {'on' if s['activation_checkpointing'] else 'off'}: estimated peak tensor memory ({unit}) of a "
        f"training step on an accelerator, eager; add ~1 GiB for the CUDA context and workspaces"
    )
    kinds = ["parameters", "optimizer", "gradients", "activations", "temporaries", "total"]
    table.add_column("side")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for side, mem in result["sides"].items():
        name = side if side == "ar" else "mdm (all masked: its bound)"
        table.add_row(name, *(f"{mem.get(kind, 0) / scale:.2f}" for kind in kinds))
    Console(width=max(Console().width, 140)).print(table)


def _ratio(vs: dict | None, median: str, spread: str) -> str:
    return "—" if not vs else f"{vs[median]:.3f}x ({vs[spread][0]:.3f}-{vs[spread][1]:.3f})"


RAW_ENCODE = """
import json, sys
from tokenizers import Tokenizer
tok, n, batch, chars = Tokenizer.from_file(sys.argv[1]), 0, [], 0
for line in open(sys.argv[2], encoding="utf-8"):
    batch.append(json.loads(line)["text"])
    chars += len(batch[-1])
    if chars >= 2_000_000:
        n += sum(len(e.ids) + 1 for e in tok.encode_batch_fast(batch))
        batch, chars = [], 0
n += sum(len(e.ids) + 1 for e in tok.encode_batch_fast(batch))
print(n)
"""
"""The reference: the `tokenizers` encoder alone over the same JSONL, as a whole process (read, parse,
encode in batches of ~2M characters on every core, count tokens + one end-of-document per document)."""


PEAK_OF = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and prints its peak resident KiB: a process forked from this one (torch loaded) would
carry our resident size into its own peak, so a small launcher forks the measured process instead."""


def _timed_process(args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak resident MB, stdout) of one fresh process; fails on a non-zero exit."""
    import subprocess
    import sys

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_OF, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{args[:4]} exited with {done.returncode}: {done.stderr[-500:]}")
    return seconds, int(done.stderr.split()[-1]) // 1024, done.stdout


def bench_prepare(megabytes: int, repeats: int = 3) -> dict:
    """`unmask prepare` as a whole process (start-up and imports included) vs the `tokenizers` encoder alone.

    Both read the same `megabytes` of JSONL (the embedded corpus repeated) with the same trained
    tokenizer, in fresh processes, interleaved A/B `repeats` times; prepare's budget is every token
    of the corpus, so both encode the same text. Reports median tokens/s, the paired ratios and
    each process's peak resident memory.
    """
    import statistics
    import sys

    from unmask.data.corpus import default_corpus_path
    from unmask.data.prepare import prepare

    with gzip.open(default_corpus_path(), "rt", encoding="utf-8") as f:
        chapters = [json.loads(line)["text"] for line in f]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        n_bytes = 0
        with open(corpus, "w") as f:
            while n_bytes < megabytes * 1_000_000:
                for text in chapters:
                    line = json.dumps({"text": text}) + "\n"
                    f.write(line)
                    n_bytes += len(line)
        tokenizer = Path(tmp) / "tok" / "tokenizer.json"
        prepare(DataConfig(unique_tokens=1000, val_tokens=0, val_fraction=0.0), tokenizer.parent, quiet=True)
        raw = [sys.executable, "-c", RAW_ENCODE, str(tokenizer), str(corpus)]
        total = int(_timed_process(raw)[2])  # every token of the corpus, end-of-document tokens included
        # fmt: off
        cli = [sys.executable, "-m", "unmask", "prepare", str(corpus), "--out", str(Path(tmp) / "out"),
               "--overwrite", "true", "--data.tokenizer", str(tokenizer), "--data.unique_tokens", str(total),
               "--data.val_tokens", "0", "--data.val_fraction", "0"]
        # fmt: on
        runs = {"prepare": [], "tokenizers": []}
        for _ in range(repeats):  # interleaved, so a change in the machine's speed hits both alike
            runs["prepare"].append(_timed_process(cli)[:2])
            runs["tokenizers"].append(_timed_process(raw)[:2])
    rates = {k: [total / s for s, _ in v] for k, v in runs.items()}
    ratios = [p / r for p, r in zip(rates["prepare"], rates["tokenizers"], strict=True)]
    peak = {k: max(mb for _, mb in v) for k, v in runs.items()}
    result = {
        "megabytes": n_bytes / 1e6,
        "tokens": total,
        "tokens_per_s": statistics.median(rates["prepare"]),
        "tokenizers_tokens_per_s": statistics.median(rates["tokenizers"]),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "peak_mb": peak["prepare"],
        "tokenizers_peak_mb": peak["tokenizers"],
        "cores": os.cpu_count(),
    }
    print(
        f"unmask prepare, whole process: {n_bytes / 1e6:.0f} MB, {total:,} tokens: {result['tokens_per_s']:,.0f} "
        f"tokens/s, peak {peak['prepare']} MB; the tokenizers encoder alone (also a whole process): "
        f"{result['tokenizers_tokens_per_s']:,.0f} tokens/s, peak {peak['tokenizers']} MB; ratio "
        f"{result['ratio']:.2f} (paired, {min(ratios):.2f}-{max(ratios):.2f} over {repeats}); {os.cpu_count()} cores"
    )
    return result


def quality_of(gen, judge_run: str | None, device: str = "cpu", dtype: str | None = "auto") -> dict[str, float]:
    """`text_quality` of a `Generation` (sampling/text.py), gen PPL under the judge run when one is given (its
    weights in `dtype`; 'auto' or None: its file's)."""
    from unmask.config import check
    from unmask.evaluation.metrics import text_quality
    from unmask.run import Run
    from unmask.runtime import resolve_device

    check(gen.output.tokens.shape[1] > gen.prompt_len, "metrics: need --length > 0 (they score the continuation)")
    judge, query_is_target = None, False
    if judge_run:
        opened = Run(judge_run)
        judge = opened.load_model("last", resolve_device(device), dtype)
        query_is_target = opened.objective.query_is_target
    return text_quality(gen.output.tokens, gen.eod_id, judge, gen.prompt_len, judge_query_is_target=query_is_target)


def generated_tokens(tokens: torch.Tensor, prompt_len: int, eod_id: int) -> torch.Tensor:
    """(B,) tokens an AR decoder generated per sample: its continuation up to and including the first
    end-of-document (sampled like any other token; the columns after it are filler), else the whole length."""
    cont = tokens[:, prompt_len:]
    eod = cont == eod_id
    return torch.where(eod.any(1), eod.int().argmax(1) + 1, cont.shape[1])


# name: SamplerConfig options, each at the bench's temperature; "{L}" is the generation length, "{L/4}" a quarter.
SAMPLE_METHODS: dict[str, dict] = {
    "ancestral": dict(method="ancestral", steps="{L}"),
    "low_confidence": dict(method="low_confidence", steps="{L}"),
    "random": dict(method="random", steps="{L}"),
    "semi_ar_b32": dict(method="low_confidence", steps="{L}", block_length=32),
    "threshold_b32": dict(method="threshold", block_length=32),
    "threshold_b32_prefix": dict(method="threshold", block_length=32, cache="prefix"),
    "threshold_b32_dual": dict(method="threshold", block_length=32, cache="dual"),
    "low_confidence_S/4": dict(method="low_confidence", steps="{L/4}"),
    "conv_S/4": dict(method="low_confidence", steps="{L/4}", conv=True),
    "edlm": dict(method="ancestral", steps="{L}"),  # + the judge run as energy
    "edlm_nce": dict(method="ancestral", steps="{L}"),  # + --energy_run (unmask finetune energy) as energy
}


def bench_sample(
    run: str,
    judge_run: str | None = None,
    length: int = 256,
    n: int = 8,
    temperature: float = 1.0,
    threshold: float = 0.9,
    methods: list[str] | None = None,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    energy_run: str | None = None,
) -> dict:
    """Tokens/s, forward passes per generated token and text quality of each sampler, same length and count.

    Every method decodes n sequences of `length` tokens after an end-of-document prompt, as one
    batch; the time covers the sampler alone (weights loaded once, one warm-up call). With a judge
    run (AR, same tokenizer) the table also has its generative perplexity, EDLM uses it as the
    energy, and the judge's own AR decoding is a reference row. With an energy run (unmask finetune
    energy), the edlm_nce row uses it as EDLM's energy.
    """
    from rich.console import Console
    from rich.table import Table

    from unmask.config import ConfigError
    from unmask.sampling.config import SamplerConfig
    from unmask.sampling.text import decode

    if threads:
        torch.set_num_threads(threads)
    energies = {"edlm": judge_run, "edlm_nce": energy_run}
    names = methods or [m for m in SAMPLE_METHODS if m not in energies or energies[m]]
    unknown = sorted(set(names) - set(SAMPLE_METHODS))
    if unknown:
        raise ConfigError(f"methods: unknown {', '.join(unknown)}; choose from {', '.join(SAMPLE_METHODS)}")
    if "edlm" in names and not judge_run:
        raise ConfigError("methods: edlm needs --judge_run (the AR energy)")
    if "edlm_nce" in names and not energy_run:
        raise ConfigError("methods: edlm_nce needs --energy_run (an energy run: unmask finetune energy)")
    rows = [("ar (judge run)", judge_run, None)] if judge_run else []
    for name in names:
        opts = {k: {"{L}": length, "{L/4}": max(length // 4, 1)}.get(v, v) for k, v in SAMPLE_METHODS[name].items()}
        if opts["method"] == "threshold":
            opts["threshold"] = threshold
        rows.append((name, run, SamplerConfig.from_flat(temperature=temperature, **opts)))
    decode(run, "", 1, 8, SamplerConfig(temperature=temperature), seed, device=device)  # warm-up
    results = {}
    for name, row_run, sampler in rows:
        is_ar = sampler is None  # the judge run's own decoding
        sampler = sampler or SamplerConfig(temperature=temperature)
        energy = energies.get(name)
        gen = decode(row_run, "", n, length, sampler, seed, device=device, energy_run=energy)
        out = gen.output
        # MDM fills every position; AR stops at end-of-document, so it counts what it generated
        per_sample = generated_tokens(out.tokens, gen.prompt_len, gen.eod_id) if is_ar else None
        tokens = n * length if per_sample is None else int(per_sample.sum())
        positions = length if per_sample is None else max(int(per_sample.max()), 1)  # decoding steps of the batch
        results[name] = {
            "tokens_per_s": tokens / gen.seconds,
            "generated_tokens": tokens,
            "forward_passes_per_token": out.forward_passes / positions,
            "energy_passes": out.energy_passes,
            "seconds": gen.seconds,
            **quality_of(gen, judge_run, device),
        }
    table = Table(
        title=f"unmask bench sample: {run}, {n} x {length} tokens, temperature {temperature}, "
        f"{torch.get_num_threads()} thread(s), {device}"
    )
    columns = ["tokens/s", "fwd/token", "gen PPL", "entropy", "rep-2", "rep-4", "distinct-2", "EOS rate"]
    keys = ["tokens_per_s", "forward_passes_per_token", "gen_ppl", "unigram_entropy", "rep_2", "rep_4", "distinct_2"]
    keys.append("eos_rate")
    table.add_column("method")
    for col in columns:
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(name, *(f"{r[k]:,.1f}" if k == "tokens_per_s" else f"{r.get(k, float('nan')):.3f}" for k in keys))
    Console(width=max(Console().width, 132)).print(table)  # one row per line, even when piped
    setting = {"run": run, "judge_run": judge_run, "length": length, "n": n, "temperature": temperature}
    return {
        **setting,
        "threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "methods": results,
    }
