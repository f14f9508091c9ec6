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

from unmask.checkpoint import atomic_path
from unmask.config import ConfigError
from unmask.model import count_params, flops_per_token
from unmask.run import Run, is_finite_number
from unmask.study.grid import StudyConfig, config_hash, jobs, tuned_values

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
    """One table row for a job of the study's grid (its run may be missing or unfinished). A run whose files do
    not read back (config, budget, metrics, provenance) is one ConfigError naming the file."""
    path = Path(job.out)
    tuned = tuned_values(job.model, job.train, study.tune_for(job.train.objective))
    row: dict[str, Any] = {
        "name": job.name, "objective": job.train.objective, "size": job.model.size, "epochs": job.train.epochs,
        "seed": job.train.seed, "tuned": json.dumps(tuned), "run": str(path),
        "unique_tokens": int(Path(job.data).name.removeprefix("U")),
    }  # fmt: skip
    if not (path / "config.json").is_file():
        return {**row, "status": "missing"}
    run = Run(path)
    budget, provenance = read_budget(run), run.provenance()
    if not isinstance(provenance, dict):
        raise ConfigError(f"{path / 'provenance.json'} is not a JSON object: the run's provenance is damaged")
    evals = [r for r in run.metrics() if "val_loss" in r]  # the last one is the run's result (Run.final_result)
    result = run.final_result()
    mcfg = run.model_config
    params = count_params(mcfg)
    finished = result is not None and result["step"] == budget["total_steps"]
    row |= {
        "status": "unfinished",
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
    curve = [r for r in evals if is_finite_number(r["val_loss"])]  # a non-finite loss is logged as null
    if curve:
        best = min(curve, key=lambda r: r["val_loss"])
        row |= {"best_val_loss": best["val_loss"], "best_epoch": _number(best.get("epoch"))}
    if finished:
        final = evals[-1]
        row |= {
            # a run that ended on a non-finite loss has no result to fit: 'diverged', listed but never fitted
            "status": "finished" if is_finite_number(result["loss"]) else "diverged",
            "final_val_loss": _number(result["loss"]),
            "final_val_stderr": _number(result["stderr"]),
            "final_bits_per_byte": _number(final.get("final_bits_per_byte")),
            "wall_seconds": _number(final.get("train_seconds")),
        }
    return row


def schedule_label(run: Run) -> str:
    """'cosine', 'wsd', or a WSD decay branch with its trunk and fork step (never taken for the cosine protocol)."""
    fork = run.config.get("forked_from")
    if not isinstance(fork, dict):
        return run.train_config.optim.schedule
    return f"wsd branch of the {fork.get('trunk_epochs')}-epoch run at step {fork.get('step')}"


BUDGET_FIELDS = ("total_steps", "unique_tokens", "tokens_to_see")


def read_budget(run: Run) -> dict[str, Any]:
    """The run's budget.json with the fields the table reads, each an integer >= 0."""
    budget = run.budget()
    ok = isinstance(budget, dict) and all(
        isinstance(budget.get(k), int) and not isinstance(budget.get(k), bool) and budget[k] >= 0 for k in BUDGET_FIELDS
    )
    if not ok:
        raise ConfigError(f"{run.path / 'budget.json'} is damaged: it needs integers {', '.join(BUDGET_FIELDS)}")
    return budget


def _number(value: Any) -> float | int | None:
    return value if is_finite_number(value) else None


def results_table(study: StudyConfig) -> list[dict[str, Any]]:
    return [row_of(job, study) for job in jobs(study)]


def write_table(rows: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """OUT.csv always; OUT.parquet too when pyarrow is installed (the `study` extra). Returns the paths. Each file
    is written whole or not at all (a full disk leaves the previous table and one WriteError line)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
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
    with atomic_path(out.with_suffix(".parquet")) as tmp:
        pq.write_table(table, tmp)
    return [*written, out.with_suffix(".parquet")]


STATUSES = ("missing", "unfinished", "finished", "diverged")
FIX = "run `unmask study run CONFIG` to write it again"


def read_table(path: str | Path, fix: str = FIX) -> list[dict[str, Any]]:
    """A results CSV written by write_table, typed again; one ConfigError line naming the file (and `fix`) when it
    is not: missing, unreadable, a row cut short, a value of the wrong type, a status or name that cannot be."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} is missing: the study's results table; {fix}")
    if not path.is_file():
        raise ConfigError(f"{path} is not a file: the study's results table is damaged; {fix}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = sorted(set(("name", "status", *INT_COLUMNS, *FLOAT_COLUMNS)) - set(reader.fieldnames or []))
            if missing:
                raise ConfigError(f"{path}: not a results table (no columns {missing}); {fix}")
            rows = [_typed(row, reader.line_num) for row in reader]
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}; {fix}" if str(e).startswith("row ") else str(e)) from None
    except (UnicodeDecodeError, csv.Error, ValueError, OSError) as e:
        reason = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
        raise ConfigError(f"{path}: damaged results table ({reason}); {fix}") from None
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a point is listed twice; {fix}")
    return rows


def _typed(row: dict[str | None, Any], line: int) -> dict[str, Any]:
    if None in row or None in row.values():  # more or fewer cells than the header: a cut or spliced file
        raise ConfigError(f"row at line {line} has {'more' if None in row else 'fewer'} cells than the header")
    out: dict[str, Any] = dict(row)
    try:
        for k in INT_COLUMNS:
            out[k] = int(row[k]) if row[k] != "" else None
        for k in FLOAT_COLUMNS:
            out[k] = float(row[k]) if row[k] != "" else None
    except ValueError:
        raise ConfigError(f"row at line {line}: {k}={row[k][:40]!r} is not a number") from None
    if not out["name"] or out["status"] not in STATUSES:
        raise ConfigError(f"row at line {line}: no point name, or a status not in {', '.join(STATUSES)}")
    if out["status"] == "finished" and not is_finite_number(out["final_val_loss"]):
        raise ConfigError(f"row at line {line}: a finished point without a finite final_val_loss")
    return out
