"""`unmask finetune r2ft`: it starts from an MDM SFT run only (one line naming the fix otherwise), counts the
filler's frequent tokens when the filler is on, and a run stopped then resumed ends with the same weights."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_train_config
from unmask import cli
from unmask.config import TrainConfig
from unmask.finetune.prepare import prepare_instructions
from unmask.finetune.r2ft import frequent_tokens, r2ft
from unmask.finetune.sft import sft
from unmask.model import read_weights
from unmask.run import Run
from unmask.training import train

FAST = dict(eval_every=4, eval_mc_passes=1, final_mc_passes=1, eval_batch_size=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir, trained_runs):
    """A tiny MDM base (the session's), its instruction folder, an SFT run of it, and an AR base."""
    root = tmp_path_factory.mktemp("r2ft")
    base = trained_runs.runs["mdm"]
    ar = train(tiny_data_dir, root / "ar", None, tiny_train_config(objective="ar", epochs=1), quiet=True,
               tensorboard=False)  # fmt: skip
    folder, _ = prepare_instructions(base, root / "sft-data", val_share=0.2, per_task=20)
    sft_run = sft(base, folder.path, root / "sft", TrainConfig.from_flat(epochs=1, batch_size=8, **FAST), quiet=True,
                  tensorboard=False)  # fmt: skip
    return {"root": root, "mdm": base, "ar": ar, "data": folder.path, "sft": sft_run}


def unmask(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_refuses_a_base_that_is_not_an_mdm_sft_run(runs, capsys):
    for base, fix in [(runs["mdm"], "fine-tune it first with unmask finetune sft"), (runs["ar"], "masked diffusion")]:
        out = runs["root"] / f"refused-{base.name}"
        code, _, err = unmask(capsys, "finetune", "r2ft", base, "--data", runs["data"], "--out", out)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "R2FT starts from an sft_mdm run" in lines[0] and fix in lines[0]
        assert not out.exists()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["finetune", "r2ft", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--out", "--resume", "--train.r2ft.beta_w", "--train.r2ft.beta_a", "--train.r2ft.gamma",
                   "--train.r2ft.filler_rate", "--train.r2ft.max_phrase", "sft_mdm"):  # fmt: skip
        assert option in text


def test_the_filler_counts_frequent_answer_tokens_and_no_special_one(runs):
    tokens, counts = frequent_tokens(runs["data"], top=10)
    assert len(tokens) == 10 and counts == sorted(counts, reverse=True) and counts[0] > 0
    run = Run(runs["sft"])
    assert not {run.special_ids.eod_id, run.special_ids.mask_id, run.special_ids.pad_id} & set(tokens)


def test_a_run_stopped_and_resumed_ends_with_the_same_weights_and_prints_its_result(runs, capsys):
    cfg = TrainConfig.from_flat(epochs=3, batch_size=4, micro_batch_size=2, lr=1e-3, r2ft_filler_rate=0.2, **FAST)
    whole = r2ft(runs["sft"], runs["data"], runs["root"] / "whole", cfg, quiet=True, tensorboard=False)
    total = Run(whole).budget()["total_steps"]
    assert total >= 3
    parted = runs["root"] / "parted"
    args = ["finetune", "r2ft", runs["sft"], "--data", runs["data"], "--out", parted, "--tensorboard", "false",
            "--train.epochs", 3, "--train.optim.lr", 1e-3, "--train.optim.warmup_frac", 0.01, "--train.batch_size", 4,
            "--train.micro_batch_size", 2, "--train.eval.every", 4,
            "--train.eval.mc_passes", 1, "--train.eval.final_mc_passes", 1, "--train.eval.batch_size", 32,
            "--train.r2ft.filler_rate", 0.2]  # fmt: skip
    code, out, _ = unmask(capsys, *args, "--train.checkpoint.stop_at_step", total // 2)
    assert code == 0 and "stopped before its last step" in out
    code, out, _ = unmask(capsys, *args, "--resume", "true")
    assert code == 0 and "final validation R2FT preference loss" in out
    a, b = read_weights(whole / "last.safetensors"), read_weights(parted / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = Run(parted).train_config
    assert saved.objective == "r2ft" and saved.r2ft.filler_tokens and saved.init_from == str(runs["sft"].resolve())
    assert Run(parted).objective.name == "r2ft"  # the run directory opens from the objectives layer
