"""`unmask finetune …`: the fine-tuning commands (instruction data, SFT, R2FT, metrics, the shipped set).

Plain typed functions like the rest of the CLI; heavy imports stay inside them so `unmask --help`
never loads torch.
"""

from __future__ import annotations

import json as jsonlib
import math
from pathlib import Path

from unmask.cli.train import announced
from unmask.config import (
    ADAPT_DEFAULTS,
    ENERGY_DEFAULTS,
    R2FT_DEFAULTS,
    SFT_DEFAULTS,
    TrainConfig,
    check,
    check_output_file,
)
from unmask.sampling.config import SamplerConfig

POOL = 2000  # unmask.finetune.tasks.POOL, repeated here to keep this module light (a test keeps them equal)
CHAT_SAMPLER = SamplerConfig.from_flat(method="low_confidence", block_length=8)


def prepare(
    run: str,
    out: str = "data/sft",
    data: str | None = None,
    val: str | None = None,
    val_share: float = 0.05,
    per_task: int = POOL,
    drop_long: bool = True,
    overwrite: bool = False,
    seed: int = 0,
    tasks: list[str] | None = None,
) -> str:
    """Instruction data → an instruction folder for one base run (its tokenizer + the chat tokens, its sequence).

    Args:
        run: The base run to fine-tune (its tokenizer and sequence length are used).
        out: Output folder (manifest.json, tokenizer.json, train/val tokens and learned flags).
        data: JSONL of {"prompt", "response"} or {"messages": [{"role", "content"}, ...]}; none = the shipped
            instruction set's training split (five tasks cut from the embedded corpus).
        val: JSONL of held-out conversations for validation; none = a seeded --val_share of --data.
        val_share: Share of --data held out for validation when --val is not given.
        per_task: Shipped set only: examples per task (at most 2000).
        drop_long: Leave out conversations longer than the sequence, with a report (false: refuse them).
        overwrite: Replace an instruction folder already at --out (any other folder is refused).
        seed: Seed of the validation hold-out.
        tasks: Shipped set only: these tasks (reverse, repeat_last, next_word, first_word, continue); none = all.
    """
    from unmask.finetune.prepare import prepare_instructions

    folder, dropped = prepare_instructions(
        run=run,
        out=out,
        data=data,
        val=val,
        val_share=val_share,
        per_task=per_task,
        drop_long=drop_long,
        overwrite=overwrite,
        seed=seed,
        tasks=tasks,
    )
    m = folder.manifest
    print(
        f"{folder.path}: {m['n_train']:,} training and {m['n_val']:,} validation conversations "
        f"({m['train_tokens']:,} training tokens, sequence {m['seq_len']}) for base run {m['base_run']}"
    )
    for split, d in dropped.items():
        if d.count:
            print(f"  dropped {d.count} {split} conversation(s) longer than {m['seq_len']} tokens (longest "
                  f"{d.longest}; e.g. {', '.join(d.where[:3])})")  # fmt: skip
    return str(folder.path)


def sft(
    base: str,
    data: str = "data/sft",
    out: str = "runs/sft",
    train: TrainConfig = SFT_DEFAULTS,
    resume: bool = False,
    tensorboard: bool = True,
) -> str:
    """Supervised fine-tuning of a base run: LLaDA's recipe for MDM, answer-only cross-entropy for AR.

    Args:
        base: The run to start from ('mdm' → objective sft_mdm, 'ar' → sft_ar; its last weights).
        data: Instruction folder prepared for this base (unmask finetune prepare --run BASE).
        out: Run directory to create (or to continue with --resume true).
        train: Epochs over the conversations, optimiser and schedule (the objective follows the base).
        resume: Continue the run in --out from its newest checkpoint.
        tensorboard: Also write TensorBoard scalars to OUT/tb.
    """
    from unmask.finetune.sft import sft as run_sft

    return announced(run_sft(base=base, data=data, out=out, train=train, resume=resume, tensorboard=tensorboard))


def r2ft(
    sft_run: str,
    data: str = "data/sft",
    out: str = "runs/r2ft",
    train: TrainConfig = R2FT_DEFAULTS,
    resume: bool = False,
    tensorboard: bool = True,
) -> str:
    """Rejective fine-tuning (R2FT, arXiv 2509.15188) of an MDM SFT run against repeated phrases and EOS floods.

    Each conversation is cut inside its answer; the model sees the text up to the cut, then masks only, and
    learns to prefer the true continuation over the last 1-14 answer tokens tiled over the rest with one
    end-of-text inside (and, with --train.r2ft.filler_rate > 0, over the answer with frequent tokens swapped in).
    Loss: -log sigmoid(b_w lp(winner) - b_l lp(rejected) - gamma) - b_a lp(winner), lp the mean log-probability
    over the masked positions (--train.r2ft.beta_w, beta_l, beta_a, gamma; 1, 1, 0.1, 0).

    Args:
        sft_run: The sft_mdm run to start from (unmask finetune sft on an 'mdm' base; its last weights).
        data: The instruction folder the SFT run was trained on (or another prepared for the same base).
        out: Run directory to create (or to continue with --resume true).
        train: Epochs over the conversations, optimiser, schedule and the r2ft_* loss options.
        resume: Continue the run in --out from its newest checkpoint.
        tensorboard: Also write TensorBoard scalars to OUT/tb.
    """
    from unmask.finetune.r2ft import r2ft as run_r2ft

    return announced(run_r2ft(base=sft_run, data=data, out=out, train=train, resume=resume, tensorboard=tensorboard))


def adapt(
    base: str,
    out: str = "runs/adapt",
    data: str | None = None,
    train: TrainConfig = ADAPT_DEFAULTS,
    resume: bool = False,
    tensorboard: bool = True,
) -> str:
    """AR -> diffusion adaptation: continue an AR run (trained or imported) as an MDM, Dream's recipe.

    The attention turns bidirectional and the logits keep the AR shift (position i predicts token i + 1); the loss
    is MDM's ELBO. Decode the result without a KV cache (--sampler.cache.kv none, the default).

    Args:
        base: The 'ar' run to start from (its last weights).
        out: Run directory to create (or to continue with --resume true).
        data: A token data folder of the base's tokenizer (unmask prepare); none = the base run's own data.
        train: Epochs, optimiser and schedule (the objective is 'mdm_adapt').
        resume: Continue the run in --out from its newest checkpoint.
        tensorboard: Also write TensorBoard scalars to OUT/tb.
    """
    from unmask.finetune.adapt import adapt as run_adapt

    return announced(run_adapt(base=base, data=data, out=out, train=train, resume=resume, tensorboard=tensorboard))


def energy(
    base: str,
    out: str = "runs/energy",
    data: str | None = None,
    train: TrainConfig = ENERGY_DEFAULTS,
    resume: bool = False,
    tensorboard: bool = True,
) -> str:
    """EDLM's energy model for an MDM run, trained by NCE against the frozen MDM's own samples (--energy_run).

    Args:
        base: The MDM run: it starts the energy model (its last weights + a zero energy head) and, frozen, draws
            the samples NCE tells from data (train.nce.t_min..t_max: noise levels, the sampler's window).
        out: Run directory to create (or to continue with --resume true).
        data: A data folder of the base's tokenizer; none = the base run's own pre-training data.
        train: Epochs, optimiser, schedule and the noise window (the objective is 'energy').
        resume: Continue the run in --out from its newest checkpoint.
        tensorboard: Also write TensorBoard scalars to OUT/tb.
    """
    from unmask.finetune.energy import train_energy

    return announced(train_energy(base=base, out=out, data=data, train=train, resume=resume, tensorboard=tensorboard))


def evaluate(
    runs: list[str],
    per_task: int = 40,
    length: int = 32,
    sampler: SamplerConfig = CHAT_SAMPLER,
    seed: int = 0,
    which: str = "last",
    device: str = "auto",
    out: str | None = None,
    json: bool = False,
    tasks: list[str] | None = None,
) -> list[dict]:
    """Task accuracy, repetition, EOS rate and response lengths of runs on the shipped test split, one row each.

    Args:
        runs: Run directories (fine-tuned runs answer through the chat template; base runs get the bare prompt).
        per_task: Test examples per task (the same ones for every run).
        length: Tokens each answer may take (the decoding window).
        sampler: MDM decoding (default: low-confidence, semi-AR blocks of 8, one token per step); AR: greedy.
        seed: Sampling seed.
        which: Weights: last (final) or best (early-stopped).
        device: 'auto', 'cpu' or 'cuda'.
        out: Also write the rows and every answer to this JSON file.
        json: Print the rows as JSON instead of a table.
        tasks: Only these shipped tasks; none = all five.
    """
    from dataclasses import asdict

    from unmask.finetune.evaluate import evaluate_instructions
    from unmask.runtime import resolve_device

    check(bool(runs), "unmask finetune eval needs at least one run directory, e.g. unmask finetune eval runs/sft")
    check(1 <= per_task <= POOL, f"per_task={per_task}: must be in [1, {POOL}] (test examples per task)")
    check_output_file(option="--out", path=out)
    rows, answers = [], {}
    for run in runs:
        row, run_answers = evaluate_instructions(
            run=run,
            per_task=per_task,
            length=length,
            sampler=sampler,
            seed=seed,
            which=which,
            device=resolve_device(name=device),
            tasks=tasks,
        )
        rows.append(row)
        answers[run] = [asdict(a) for a in run_answers]
    if out:
        from unmask.checkpoint import atomic_write_text

        atomic_write_text(path=Path(out), text=jsonlib.dumps({"rows": rows, "answers": answers}, indent=1))
    if json:
        print(jsonlib.dumps(rows))
    else:
        print_rows(rows)
    return rows


COLUMNS = ("accuracy", "rep_2", "rep_4", "eos_rate", "stopped", "length_mean", "length_p90", "window_mean")


def print_rows(rows: list[dict]) -> None:
    """One line per run: the headline metrics, then the per-task accuracies."""
    tasks = [k for k in rows[0] if k.startswith("acc_")]
    header = ["run", *COLUMNS, *tasks]
    table = [[str(r["run"]), *(_fmt(r.get(c)) for c in (*COLUMNS, *tasks))] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(header)]
    for line in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    print(f"({rows[0]['n']} test prompts per run, answers of at most {rows[0]['window']} tokens; an MDM's window "
          "shrinks where a long prompt leaves less of its sequence: window_mean)")  # fmt: skip


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def tasks(out: str = "data/instructions", per_task: int = POOL) -> list[str]:
    """Write the shipped instruction set as JSONL (train.jsonl, test.jsonl of {task, prompt, response}).

    Args:
        out: Output folder.
        per_task: Training examples per task (at most 2000); the test split gets a tenth.
    """
    from unmask.finetune.tasks import write_instruction_set

    paths = [str(p) for p in write_instruction_set(out=out, per_task=per_task)]
    print(" ".join(paths))
    return paths
