"""`unmask eval`: every metric of one run, or of several side by side."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Literal

from unmask.config import ConfigError, check_output_file
from unmask.evaluation.config import LikelihoodConfig


def evaluate(
    runs: list[str] | str,
    which: Literal["best", "last"] = "last",
    mc_passes: int | None = 32,
    seed: int = 0,
    tasks: list[str] | str | None = None,
    likelihood: LikelihoodConfig = LikelihoodConfig(),
    delimiter: str = " ",
    limit: int | None = None,
    validation: bool = True,
    out: str | None = None,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    json: bool = False,
    text: list[str] | None = None,
) -> dict:
    """Every metric of one run, or of several side by side: validation NLL/ELBO and bits per byte, zero-shot tasks.

    `unmask eval RUN`, `unmask eval RUN_A RUN_B ...` (or `unmask eval compare RUN_A RUN_B ...`): one table,
    one column per run. MDM losses are ELBOs (upper bounds on the NLL) ± standard error over MC passes.

    Args:
        runs: Run directories (a leading word 'compare' is allowed).
        which: Weights to score: last (the run's final weights: its result) or best (the lowest point of the
            validation curve: an early-stopped result, labelled as such).
        mc_passes: MDM Monte Carlo passes of the validation ELBO (fixed seed); None = the run's training setting.
        seed: Seed of the MDM validation noise.
        tasks: Zero-shot multiple-choice JSONL file(s), e.g. --tasks a.jsonl b.jsonl (context, choices, label or
            gold_text): acc, acc_norm, 95% CI.
        likelihood: How MDM scores each choice (AR is exact): estimator, MC samples, guidance.
        delimiter: Text between the context and each choice (lm-eval's target_delimiter).
        limit: Score only the first N items of each task.
        validation: Compute the validation loss on the run's data folder (skipped with a note when it is gone
            and --tasks are given).
        text: Score these UTF-8 text files instead of the validation split (the run's own tokenizer; each file one
            document): NLL or ELBO per token and bits per byte. Works on a run directory copied alone.
        out: Also write OUT.csv (one row per run) and OUT.json (everything, per-item scores included).
        device: 'auto', 'cpu' or 'cuda'.
        dtype: Weights' dtype: auto (the weights file's: an imported bf16 run stays bf16, half float32's memory),
            float32 or bfloat16. Losses are computed in float32 either way.
        json: Print one JSON object instead of a table.
    """
    from unmask.evaluation.compare import evaluate_run, print_table, write_outputs

    runs = [runs] if isinstance(runs, str) else list(runs)
    tasks = [tasks] if isinstance(tasks, str) else tasks
    text = [text] if isinstance(text, str) else text
    if runs[:1] == ["compare"]:
        runs = runs[1:]
    if not runs:
        raise ConfigError("unmask eval needs at least one run directory, e.g. unmask eval runs/mdm-E64")
    for suffix in (".csv", ".json") if out else ():
        check_output_file(option="--out", path=str(Path(out).with_suffix(suffix)), make_parents=True)
    results = [
        evaluate_run(
            run=run,
            which=which,
            mc_passes=mc_passes,
            seed=seed,
            tasks=tasks,
            likelihood=likelihood,
            device=device,
            delimiter=delimiter,
            limit=limit,
            validation=validation,
            progress=not json,
            text=text,
            dtype=dtype,
        )
        for run in runs
    ]
    written = write_outputs(results=results, out=out) if out else []
    if json:
        print(jsonlib.dumps(results[0] if len(results) == 1 else {"runs": results}))
    else:
        print_table(results=results)
        for path in written:
            print(f"wrote {path}")
    return results[0] if len(results) == 1 else {"runs": results}
