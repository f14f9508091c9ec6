"""Does R2FT remove the repetition of parallel decoding? A tiny MDM, SFT'd on the `continue` task, then R2FT'd;
both answer the same test prompts with 1, 4 and 8 tokens per step. Prints one metrics row per (steps, run).

    python benchmarks/r2ft_parallel_decoding.py [--seed 0] [--out runs/r2ft-parallel]

Measured (docs/finetuning.md): at 8 tokens per step SFT repeats (rep-2 0.60) and R2FT does not, but only
because the R2FT'd model answers with end-of-text alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.data import prepare
from unmask.finetune.evaluate import evaluate_instructions
from unmask.finetune.prepare import prepare_instructions
from unmask.finetune.r2ft import r2ft
from unmask.finetune.sft import sft
from unmask.sampling.config import SamplerConfig
from unmask.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/r2ft-parallel", help="a new folder for the runs")
    args = parser.parse_args()
    root = Path(args.out)
    if root.exists():
        raise SystemExit(f"{root} exists; pass another --out")
    torch.set_num_threads(1)
    quiet = dict(quiet=True, tensorboard=False)
    fast = dict(eval_every=0, eval_mc_passes=1, final_mc_passes=1, seed=args.seed)
    tiny = DataConfig(unique_tokens=20_000, val_tokens=2_000, vocab_size=512, seq_len=64, tokenizer_train_bytes=400_000)
    data = prepare(tiny, root / "data", quiet=True)
    base_cfg = TrainConfig.from_flat(objective="mdm", epochs=4, batch_size=16, lr=3e-3, **fast)
    base = train(data, root / "base", ModelConfig(size="tiny"), base_cfg, **quiet)
    folder, _ = prepare_instructions(base, root / "sft-data", per_task=1000, tasks=["continue"])
    sft_run = sft(
        base, folder.path, root / "sft", TrainConfig.from_flat(epochs=4, batch_size=16, lr=3e-3, **fast), **quiet
    )
    r2ft_run = r2ft(
        sft_run, folder.path, root / "r2ft", TrainConfig.from_flat(epochs=1, batch_size=16, lr=1e-3, **fast), **quiet
    )
    for steps in (32, 8, 4):
        sampler = SamplerConfig.from_flat(method="low_confidence", steps=steps)
        for name, run in (("sft", sft_run), ("r2ft", r2ft_run)):
            row, _ = evaluate_instructions(str(run), 60, 32, sampler, 0, "last", "cpu", ["continue"])
            figures = {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
            print(f"{steps} steps for 32 tokens, {name}: {figures}", flush=True)


if __name__ == "__main__":
    main()
