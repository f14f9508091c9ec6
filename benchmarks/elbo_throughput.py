"""MDM validation-ELBO throughput: validation sequences scored per second at K Monte Carlo passes.

    python benchmarks/elbo_throughput.py --passes 32 --threads 1

Prepares (once) the demo's data shape (embedded corpus, vocabulary 1024, sequence 64, 8,192
validation tokens = 128 sequences) and times `validation_loss` on a freshly initialised
demo-size MDM (speed does not depend on the weights). Prints the best of --repeats timings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unmask.config import DataConfig, ModelConfig
from unmask.data import TokenData, prepare
from unmask.model import Transformer
from unmask.objectives import Specials, get_objective
from unmask.objectives.validation import validation_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", default="demo")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="/tmp/unmask_bench_data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (Path(args.data) / "manifest.json").exists():
        prepare(DataConfig(unique_tokens=25_000, val_tokens=8_192, seq_len=64), args.data, quiet=True)
    data = TokenData(args.data)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size=args.size, vocab_size=data.vocab_size, seq_len=data.seq_len, causal=False))
    n_seq = data.n_sequences("val")
    score = dict(sequences=data.split("val"), objective=get_objective("mdm"),
                 specials=Specials(data.mask_id, data.pad_id), batch_size=args.batch_size)  # fmt: skip
    validation_loss(model, **score, mc_passes=2)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        val = validation_loss(model, **score, mc_passes=args.passes)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(
        f"ELBO K={args.passes}: {n_seq} sequences x {data.seq_len} tokens in {best:.2f} s (best of {args.repeats}: "
        f"{', '.join(f'{t:.2f}' for t in times)}) = {n_seq / best:.1f} sequences/s, "
        f"{n_seq * args.passes * data.seq_len / best:,.0f} token-passes/s; size {args.size}, "
        f"{torch.get_num_threads()} thread(s); loss {val.loss:.4f} ± {val.stderr:.4f}"
    )


if __name__ == "__main__":
    main()
