"""`unmask bench train|prepare|sample|memory`: throughput and memory figures (memory --checkpoint: an import's)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Literal

from unmask.config import ModelConfig, check, check_output_file


def bench(
    what: Literal["train", "prepare", "sample", "memory"],
    steps: int = 30,
    threads: int = 0,
    against: Literal["none", "reference"] = "none",
    repeats: int = 5,
    compile: bool = False,
    peak_tflops: float | None = None,
    size: str = "demo",
    batch_size: int = 16,
    seq_len: int = 64,
    vocab_size: int = 1024,
    prepare_mb: int = 64,
    run: str | None = None,
    judge_run: str | None = None,
    length: int = 256,
    samples: int = 8,
    temperature: float = 1.0,
    threshold: float = 0.9,
    methods: list[str] | None = None,
    device: str = "cpu",
    activation_checkpointing: bool = False,
    energy_run: str | None = None,
    checkpoint: str | None = None,
    json: str | None = None,
) -> dict:
    """Throughput: training tokens/s of AR and MDM, `unmask prepare` tokens/s, or every sampler's tokens/s and quality;
    or the estimated peak memory of a training step on a GPU ('memory', computed on any machine).

    Args:
        what: 'train', 'prepare', 'sample' or 'memory' (AR and MDM training steps at --size, --seq_len, micro-batch
            --batch_size and --vocab_size, traced on fake tensors: parameters, AdamW moments, activations, total).
        steps: train: timed optimiser steps per objective and repeat (after 5 warm-up steps).
        threads: torch CPU threads; 0 = torch's default (sample: 1, so figures compare per core).
        against: train: 'reference' also times a nanoGPT-style GPT of the same shape, interleaved, and prints the
            paired ratios unmask / reference (median and range over the repeats), raw and per FLOP.
        repeats: train: fresh processes per side, interleaved with the order rotating.
        compile: train: torch.compile every side.
        peak_tflops: train: the device's dense bf16 peak for MFU (default: a table of common GPUs; none on CPUs).
        size: Model size (unmask.model.SIZES).
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        vocab_size: Vocabulary size of the synthetic batch.
        prepare_mb: Corpus size for the prepare benchmark (the embedded corpus repeated).
        run: sample: the MDM run whose samplers are compared.
        judge_run: sample: an AR run (same tokenizer) for generative perplexity, EDLM's energy and a reference row.
        length: sample: tokens generated per sequence, equal for every method.
        samples: sample: sequences per method (one batch).
        temperature: sample: sampling temperature of every method.
        threshold: sample: confidence threshold of the threshold (Fast-dLLM) rows.
        methods: sample: rows to run (default all): ancestral, low_confidence, random, semi_ar_b32, threshold_b32,
            threshold_b32_prefix, threshold_b32_dual, low_confidence_S/4, conv_S/4, edlm (with --judge_run),
            edlm_nce (with --energy_run).
        device: 'cpu', 'cuda' or 'auto' (train and sample).
        activation_checkpointing: memory: with each block's activations recomputed in backward.
        energy_run: sample: an energy run (unmask finetune energy) of the MDM run, EDLM's energy in the edlm_nce row.
        checkpoint: memory: a Hugging Face-format folder instead of a training step: the estimated peak resident
            memory of `unmask import` and of using the run in bf16 and float32, from its headers (no tensor read).
        json: train, sample and memory: also write the results to this JSON file.
    """
    from unmask.bench import bench_memory, bench_prepare, bench_sample, bench_train

    check(0 <= threads <= 4096, f"threads={threads}: must be in [0, 4096] (0 = torch's default)")
    if what == "prepare":
        check_prepare_disk(prepare_mb)
        return bench_prepare(megabytes=prepare_mb)
    check_output_file(option="--json", path=json)
    if what == "memory" and checkpoint is not None:
        from dataclasses import asdict

        from unmask.hub.memory import estimate_checkpoint_memory, print_checkpoint_memory

        estimate = estimate_checkpoint_memory(folder=checkpoint)
        print_checkpoint_memory(memory=estimate)
        result = asdict(estimate)
    elif what == "sample":
        check(bool(run), "bench sample needs --run (an MDM run directory)")
        check(length >= 1 and samples >= 1, f"length={length}, samples={samples}: both must be >= 1")
        result = bench_sample(
            run=run, judge_run=judge_run, length=length, n=samples, temperature=temperature, threshold=threshold,
            methods=methods, threads=threads or 1, device=device, energy_run=energy_run,
        )  # fmt: skip
    else:
        check_step_shape(steps=steps, size=size, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size)
        if what == "memory":
            result = bench_memory(
                size=size, seq_len=seq_len, batch_size=batch_size, vocab_size=vocab_size,
                activation_checkpointing=activation_checkpointing,
            )  # fmt: skip
        else:
            check(1 <= repeats <= 1000, f"repeats={repeats}: must be in [1, 1000]")
            check(peak_tflops is None or peak_tflops > 0, f"peak_tflops={peak_tflops}: must be > 0")
            from unmask.runtime import resolve_device

            resolve_device(name=device)  # names a missing GPU before any work
            result = bench_train(
                size=size, seq_len=seq_len, batch_size=batch_size, vocab_size=vocab_size, steps=steps,
                threads=threads, device=device, compile=compile, against=against, repeats=repeats,
                peak_tflops=peak_tflops,
            )  # fmt: skip
    if json:
        from unmask.checkpoint import atomic_write_text

        atomic_write_text(path=Path(json), text=jsonlib.dumps(result, indent=2))
    return result


def check_prepare_disk(prepare_mb: int) -> None:
    """The prepare benchmark writes ~2 x its corpus to the temporary folder: refuse before, not halfway."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free
    check(prepare_mb >= 1, f"prepare_mb={prepare_mb}: must be >= 1")
    check(2 * prepare_mb * 10**6 <= free, f"prepare_mb={prepare_mb}: needs ~{2 * prepare_mb:,} MB of temporary "
          f"disk, {free // 10**6:,} MB free")  # fmt: skip


def check_step_shape(steps: int, size: str, batch_size: int, seq_len: int, vocab_size: int) -> None:
    """The training step's shape, each bad value named before any work."""
    check(1 <= steps <= 100_000, f"steps={steps}: must be in [1, 100000]")
    check(batch_size >= 1 and 4 <= vocab_size <= 2**24, f"batch_size={batch_size}, vocab_size={vocab_size}: "
          f"need batch_size >= 1 and vocab_size in [4, 2**24]")  # fmt: skip
    ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len)  # names a bad size or seq_len before any work
    check(batch_size * seq_len <= 2**24, f"batch_size x seq_len = {batch_size * seq_len:,} tokens: must be <= "
          f"2**24")  # fmt: skip
