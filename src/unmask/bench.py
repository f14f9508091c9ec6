"""`unmask bench`: throughput figures (printed, never asserted in tests)."""

from __future__ import annotations

import gzip
import json
import tempfile
import time
from pathlib import Path

import torch

from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.model import Transformer, count_params
from unmask.objectives import Specials, get_objective
from unmask.runtime import keep_freed_memory
from unmask.training import make_optimizer


def time_train_steps(model: Transformer, objective: str, x: torch.Tensor, steps: int, warmup: int = 5) -> float:
    """Seconds per optimiser step (forward, backward, clip, AdamW) of an objective on a fixed batch."""
    cfg = TrainConfig(objective=objective)
    optimizer = make_optimizer(model, cfg)
    loss_fn = get_objective(objective).make_loss(cfg, x.shape[1])
    sp = Specials(mask_id=1, pad_id=2)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        out = loss_fn(model, x, sp, None)
        (out.loss_sum / out.n_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def bench_train(steps: int, threads: int, size: str, batch_size: int, seq_len: int, vocab_size: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    torch.manual_seed(0)
    x = torch.randint(3, vocab_size, (batch_size, seq_len))
    results = {}
    for objective in ("ar", "mdm"):
        causal = get_objective(objective).causal
        cfg = ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len, causal=causal)
        seconds = time_train_steps(Transformer(cfg), objective, x, steps)
        results[objective] = {"ms_per_step": 1000 * seconds, "tokens_per_s": batch_size * seq_len / seconds}
    print(
        f"unmask train throughput: size {size} ({count_params(cfg) / 1e6:.2f}M params), batch {batch_size}x{seq_len}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    for objective, r in results.items():
        print(f"  {objective:4s} {r['ms_per_step']:8.2f} ms/step {r['tokens_per_s']:10,.0f} tokens/s")
    return results


def bench_prepare(megabytes: int) -> dict:
    """Tokenise `megabytes` of text (the embedded corpus repeated) through `unmask prepare`."""
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
        tokenizer_dir = prepare(
            DataConfig(unique_tokens=1000, val_tokens=0, val_fraction=0.0), Path(tmp) / "tok", quiet=True
        )
        # A budget safely below the corpus size (> 4 bytes/token at vocab 1024), so the timing covers
        # reading, parallel encoding and writing of nearly the whole corpus.
        total = n_bytes // 6
        cfg = DataConfig(
            inputs=[str(corpus)],
            tokenizer=str(tokenizer_dir / "tokenizer.json"),
            unique_tokens=total,
            val_tokens=0,
            val_fraction=0.0,
        )
        start = time.perf_counter()
        prepare(cfg, Path(tmp) / "out", quiet=True)
        seconds = time.perf_counter() - start
    rate = total / seconds
    print(
        f"unmask prepare: {n_bytes / 1e6:.0f} MB, {total:,} tokens in {seconds:.1f} s = {rate:,.0f} tokens/s "
        f"({torch.get_num_threads()} cores visible to torch; tokenizers uses all cores)"
    )
    return {"megabytes": n_bytes / 1e6, "tokens": total, "seconds": seconds, "tokens_per_s": rate}


def quality_of(gen, judge_run: str | None, device: str = "cpu") -> dict[str, float]:
    """`text_quality` of a `Generation` (sampling/text.py), gen PPL under the judge run when one is given."""
    from unmask.config import check
    from unmask.evaluation.metrics import text_quality
    from unmask.run import Run
    from unmask.runtime import resolve_device

    check(gen.output.tokens.shape[1] > gen.prompt_len, "metrics: need --length > 0 (they score the continuation)")
    judge, query_is_target = None, False
    if judge_run:
        opened = Run(judge_run)
        judge, query_is_target = opened.load_model("last", resolve_device(device)), opened.objective.query_is_target
    return text_quality(gen.output.tokens, gen.eod_id, judge, gen.prompt_len, judge_query_is_target=query_is_target)


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
) -> dict:
    """Tokens/s, forward passes per generated token and text quality of each sampler, same length and count.

    Every method decodes n sequences of `length` tokens after an end-of-document prompt, as one
    batch; the time covers the sampler alone (weights loaded once, one warm-up call). With a judge
    run (AR, same tokenizer) the table also has its generative perplexity, EDLM uses it as the
    energy, and the judge's own AR decoding is a reference row.
    """
    from rich.console import Console
    from rich.table import Table

    from unmask.config import ConfigError
    from unmask.sampling.config import SamplerConfig
    from unmask.sampling.text import decode

    if threads:
        torch.set_num_threads(threads)
    names = methods or [m for m in SAMPLE_METHODS if judge_run or m != "edlm"]
    unknown = sorted(set(names) - set(SAMPLE_METHODS))
    if unknown:
        raise ConfigError(f"methods: unknown {', '.join(unknown)}; choose from {', '.join(SAMPLE_METHODS)}")
    if "edlm" in names and not judge_run:
        raise ConfigError("methods: edlm needs --judge_run (the AR energy)")
    rows = [("ar (judge run)", judge_run, None)] if judge_run else []
    for name in names:
        opts = {k: {"{L}": length, "{L/4}": max(length // 4, 1)}.get(v, v) for k, v in SAMPLE_METHODS[name].items()}
        if opts["method"] == "threshold":
            opts["threshold"] = threshold
        rows.append((name, run, SamplerConfig.from_flat(temperature=temperature, **opts)))
    decode(run, "", 1, 8, SamplerConfig(temperature=temperature), seed, device=device)  # warm-up
    results = {}
    for name, row_run, sampler in rows:
        sampler = sampler or SamplerConfig(temperature=temperature)
        energy = judge_run if name == "edlm" else None
        gen = decode(row_run, "", n, length, sampler, seed, device=device, energy_run=energy)
        out = gen.output
        results[name] = {
            "tokens_per_s": n * length / gen.seconds,
            "forward_passes_per_token": out.forward_passes / length,
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
