"""Run directories → one tidy results table (a row per run), written as CSV and Parquet.

Columns: the point (objective, size, U, E, seed, tuned values), parameters with and without the
embedding, tokens seen, FLOPs (unmask.model.flops_per_token: 6 per weight plus 12·n_layer·T·d_model
per token for attention, forward and backward), the run's result (final weights, final_mc_passes for MDM) with its
standard error and bits per byte, the lowest point of its validation curve (early-stopped, labelled),
wall time, hardware, the commit that trained it and a config hash. Unfinished runs are listed with status 'unfinished'.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from unmask.config import ConfigError
from unmask.model import count_params, flops_per_token
from unmask.run import Run
from unmask.study.grid import TUNABLE, StudyConfig, config_hash, jobs

COLUMNS = [
    "name", "status", "objective", "size", "unique_tokens", "epochs", "seed", "tuned",
    "params", "non_embedding_params", "tokens_seen", "flops",
    "final_val_loss", "final_val_stderr", "final_bits_per_byte", "kind", "schedule",
    "best_val_loss", "best_epoch", "wall_seconds", "hardware", "git_sha", "config_hash", "run",
]  # fmt: skip
INT_COLUMNS = ("unique_tokens", "epochs", "seed", "params", "non_embedding_params", "tokens_seen")
FLOAT_COLUMNS = ("flops", "final_val_loss", "final_val_stderr", "final_bits_per_byte", "best_val_loss", "best_epoch",
                 "wall_seconds")  # fmt: skip


def row_of(job, study: StudyConfig) -> dict[str, Any]:
    """One table row for a job of the study's grid (its run may be missing or unfinished)."""
    path = Path(job.out)
    grid = study.tune_for(job.train.objective)
    tuned = {k: getattr(job.model if TUNABLE[k] == "model" else job.train, k) for k in sorted(grid)}
    row: dict[str, Any] = {
        "name": job.name, "objective": job.train.objective, "size": job.model.size, "epochs": job.train.epochs,
        "seed": job.train.seed, "tuned": json.dumps(tuned), "run": str(path),
        "unique_tokens": int(Path(job.data).name.removeprefix("U")),
    }  # fmt: skip
    if not (path / "config.json").is_file():
        return {**row, "status": "missing"}
    run = Run(path)
    result, budget = run.final_result(), run.budget()
    mcfg = run.model_config
    params = count_params(mcfg)
    evals = [r for r in run.metrics() if "val_loss" in r]
    finished = result is not None and result["step"] == budget["total_steps"]
    provenance = run.provenance()
    row |= {
        "status": "finished" if finished else "unfinished",
        "unique_tokens": budget["unique_tokens"],
        "params": params,
        "non_embedding_params": params - mcfg.vocab_size * mcfg.d_model,
        "tokens_seen": budget["tokens_to_see"],
        "flops": flops_per_token(mcfg) * budget["tokens_to_see"],
        "kind": run.objective.bound_name,
        "schedule": schedule_label(run),
        "config_hash": config_hash(run.config),
        "git_sha": provenance.get("git_sha"),
        "hardware": provenance.get("cuda")
        or f"{provenance.get('platform', '?')}, {provenance.get('torch_threads')} thread(s)",
    }
    if evals:
        best = min(evals, key=lambda r: r["val_loss"])
        row |= {"best_val_loss": best["val_loss"], "best_epoch": best["epoch"]}
    if finished:
        final = [r for r in evals if "final_val_loss" in r][-1]
        row |= {
            "final_val_loss": result["loss"],
            "final_val_stderr": result["stderr"],
            "final_bits_per_byte": final.get("final_bits_per_byte"),
            "wall_seconds": final.get("train_seconds"),
        }
    return row


def schedule_label(run: Run) -> str:
    """'cosine', 'wsd', or a WSD decay branch with its trunk and fork step (never taken for the cosine protocol)."""
    fork = run.config.get("forked_from")
    if not isinstance(fork, dict):
        return run.train_config.schedule
    return f"wsd branch of the {fork.get('trunk_epochs')}-epoch run at step {fork.get('step')}"


def results_table(study: StudyConfig) -> list[dict[str, Any]]:
    return [row_of(job, study) for job in jobs(study)]


def write_table(rows: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """OUT.csv always; OUT.parquet too when pyarrow is installed (the `study` extra). Returns the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    written = [csv_path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.table({k: [r.get(k) for r in rows] for k in COLUMNS})
    pq.write_table(table, out.with_suffix(".parquet"))
    return [*written, out.with_suffix(".parquet")]


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """A results CSV written by write_table, typed again; one ConfigError line naming the file when it is not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the study's results table; run `unmask study run` or restore it")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = sorted(set(("name", "status", *INT_COLUMNS, *FLOAT_COLUMNS)) - set(reader.fieldnames or []))
            if missing:
                raise ConfigError(f"{path}: not a results table (no columns {missing}); restore the file")
            return [_typed(row) for row in reader]
    except (UnicodeDecodeError, csv.Error, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: damaged results table ({type(e).__name__}: {e}); restore the file") from None


def _typed(row: dict[str, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for k in INT_COLUMNS:
        out[k] = int(row[k]) if row.get(k) not in (None, "") else None
    for k in FLOAT_COLUMNS:
        out[k] = float(row[k]) if row.get(k) not in (None, "") else None
    return out
