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
from unmask.objectives import OBJECTIVES, Specials
from unmask.train import keep_freed_memory, make_optimizer


def time_train_steps(model: Transformer, objective: str, x: torch.Tensor, steps: int, warmup: int = 5) -> float:
    """Seconds per optimiser step (forward, backward, clip, AdamW) of `ar` or `mdm` on a fixed batch."""
    optimizer = make_optimizer(model, TrainConfig())
    sp = Specials(mask_id=1, pad_id=2)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        out = OBJECTIVES[objective](model, x, sp, None)
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
        cfg = ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len, causal=objective != "mdm")
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
