"""The issue's behavioural test, on a tiny base → SFT → R2FT pipeline (CPU, about a minute and a half alone).

Measured while building it (see docs/finetuning.md): at this scale the SFT model answers the shipped tasks
with an end-of-text flood under a long low-confidence window, so there are almost no generated tokens whose
repetition R2FT could lower. The test therefore asserts what held on every seed tried: R2FT does not raise
rep-2 and does not lower accuracy by more than TOLERANCE against SFT alone at the same decoding settings (both
printed), and it raises the held-out margin between the true continuation and the repeated phrase, the
quantity it trains, well above SFT's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.data import prepare
from unmask.data.instructions import InstructionData
from unmask.finetune.evaluate import evaluate_instructions
from unmask.finetune.prepare import prepare_instructions
from unmask.finetune.r2ft import r2ft
from unmask.finetune.sft import sft
from unmask.objectives import Specials
from unmask.objectives.r2ft import continuation_logp, r2ft_batch
from unmask.run import Run
from unmask.sampling.config import SamplerConfig
from unmask.training import train

TOLERANCE = 0.05
"""The accuracy R2FT may lose against SFT alone (absolute)."""
SAMPLER = SamplerConfig.from_flat(method="low_confidence", conv=True)
LENGTH = 40


def held_out_margin(run_dir, data) -> float:
    """Mean over held-out conversations and 4 fixed cuts of lp(winner) − lp(repeated phrase)."""
    model = Run(run_dir).load_model("last").eval()
    folder = InstructionData(data)
    batch = folder.batch("val", np.arange(folder.n_sequences("val")))
    sp = Specials(folder.mask_id, folder.pad_id, folder.eod_id)
    with torch.no_grad():
        margins = []
        for seed in range(4):
            b = r2ft_batch(batch, sp, torch.Generator().manual_seed(seed))
            lp = continuation_logp(model, b.inputs, b.region, [b.winner, *b.rejected], sp.mask_id)
            margins.append((lp[0] - lp[1]).mean().item())
    return sum(margins) / len(margins)


def pipeline(root, seed: int = 0) -> tuple[dict, dict]:
    """Tiny base → SFT → R2FT under `root`: the metrics rows and held-out margins of SFT and R2FT."""
    torch.set_num_threads(1)
    data = prepare(
        DataConfig(unique_tokens=20_000, val_tokens=2_000, vocab_size=512, seq_len=64, tokenizer_train_bytes=400_000),
        root / "data",
        quiet=True,
    )
    fast = dict(eval_every=0, eval_mc_passes=1, final_mc_passes=1, seed=seed)
    base_cfg = TrainConfig.from_flat(objective="mdm", epochs=4, batch_size=16, lr=3e-3, **fast)
    base = train(data, root / "base", ModelConfig(size="tiny"), base_cfg, quiet=True, tensorboard=False)
    folder, _ = prepare_instructions(base, root / "sft-data", per_task=100)
    sft_run = sft(base, folder.path, root / "sft", TrainConfig.from_flat(epochs=6, batch_size=16, lr=3e-3, **fast),
                  quiet=True, tensorboard=False)  # fmt: skip
    r2ft_config = TrainConfig.from_flat(epochs=1, batch_size=16, lr=1e-3, **fast)
    r2ft_run = r2ft(sft_run, folder.path, root / "r2ft", r2ft_config, quiet=True, tensorboard=False)
    rows = {name: evaluate_instructions(str(run), 12, LENGTH, SAMPLER, 0, "last", "cpu")[0]
            for name, run in (("sft", sft_run), ("r2ft", r2ft_run))}  # fmt: skip
    margins = {name: held_out_margin(run, folder.path) for name, run in (("sft", sft_run), ("r2ft", r2ft_run))}
    for name, row in rows.items():
        print(f"{name}: accuracy {row['accuracy']:.3f} rep-2 {row['rep_2']:.3f} rep-4 {row['rep_4']:.3f} "
              f"eos_rate {row['eos_rate']:.3f} length {row['length_mean']:.1f} margin {margins[name]:.3f}")  # fmt: skip
    return rows, margins


@pytest.mark.slow
def test_r2ft_does_not_raise_repetition_nor_lose_accuracy_and_raises_the_margin(tmp_path):
    rows, margins = pipeline(tmp_path)

    def rep(row) -> float:
        return 0.0 if math.isnan(row["rep_2"]) else row["rep_2"]  # nan: no generated token, nothing repeated

    assert rep(rows["r2ft"]) <= rep(rows["sft"]) + 1e-9
    assert rows["r2ft"]["accuracy"] >= rows["sft"]["accuracy"] - TOLERANCE
    assert margins["r2ft"] > margins["sft"] + 1.0
