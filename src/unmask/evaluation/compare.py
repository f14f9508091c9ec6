"""Every metric of one or several runs, side by side: what `unmask eval` prints and writes.

A run's metrics: validation loss (AR NLL or MDM ELBO ± standard error, labelled as a bound)
with bits per byte, and for each `--tasks` JSONL file acc and acc_norm with 95% Wilson
intervals. Several runs become one table (one column per run) and, with `out`, a CSV (one
row per run, one column per metric) and a JSON file with everything, per-item scores included.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from unmask.checkpoint import atomic_path, atomic_write_text, warn
from unmask.config import MAX_MC_PASSES, ConfigError
from unmask.evaluation.config import LikelihoodConfig


def evaluate_run(
    run: str,
    which: str = "last",
    mc_passes: int | None = 32,
    seed: int = 0,
    tasks: list[str] | None = None,
    likelihood: LikelihoodConfig | None = None,
    device: str = "auto",
    delimiter: str = " ",
    limit: int | None = None,
    validation: bool = True,
    progress: bool = True,
    text: list[str] | None = None,
    dtype: str | None = "auto",
) -> dict[str, Any]:
    """All metrics of one run as one JSON-able dict (validation fields at the top level).

    Validation runs on `text` files when given, else on the run's data folder; when that folder is
    gone and tasks are given, validation is skipped with a note (a run copied alone still scores tasks).
    dtype: the model's: 'auto' (its weights file's: an imported bf16 run stays bf16), 'float32' or 'bfloat16'; the
    losses are computed from float32 logits either way.
    """
    from unmask.evaluation.likelihood import run_validation
    from unmask.evaluation.zeroshot import evaluate_tasks
    from unmask.model import resolve_dtype
    from unmask.run import Run
    from unmask.runtime import resolve_device

    if mc_passes is not None and not 1 <= mc_passes <= MAX_MC_PASSES:
        raise ConfigError(f"--mc_passes {mc_passes}: must be in [1, {MAX_MC_PASSES}] (or null: the run's setting)")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed {seed}: must be in [0, 2**63)")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be >= 1 (or null for every item)")
    dev, dtype = resolve_device(device), resolve_dtype(dtype)
    opened = Run(run)
    cfg = opened.train_config
    result: dict[str, Any] = {"run": run, "which": which, "objective": cfg.objective, "epochs": cfg.epochs}
    data_gone = opened.data_path is None or not opened.data_path.is_dir()
    if validation and data_gone and tasks and not text:
        warn(f"{run}: validation skipped, its data folder {opened.data_path} is gone (pass --text FILE to score text)")
    elif validation or text:
        model = opened.load_model(which, dev, dtype)
        val, source = run_validation(opened, model, mc_passes, seed, text)
        result.update(val.to_dict())
        result["validation_source"] = source
        del model
    if tasks:
        lk = likelihood or LikelihoodConfig()
        exact = opened.objective.exact
        result["likelihood"] = {
            "estimator": "exact" if exact else lk.estimator,
            "mc_samples": None if exact else lk.mc_samples,
            "cfg_scale": 0.0 if exact else lk.cfg_scale,
        }
        result["tasks"] = evaluate_tasks(opened, tasks, which, lk, dev, delimiter, limit, progress, dtype)
    return result


def flat_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """One run's metrics as {column: value} (no per-item scores): a CSV row."""
    row = {k: result.get(k) for k in ("run", "which", "objective", "epochs")}
    for k in ("kind", "loss", "stderr", "bits_per_byte", "n_tokens", "passes"):
        if k in result:
            row[f"val_{k}"] = result[k]
    if "likelihood" in result:
        row.update({f"mc_{k}": v for k, v in result["likelihood"].items()})
    for task, scores in result.get("tasks", {}).items():
        for name in ("acc", "acc_norm"):
            row[f"{task}/{name}"] = scores[name]
            row[f"{task}/{name}_ci95_low"], row[f"{task}/{name}_ci95_high"] = scores[f"{name}_ci95"]
        row[f"{task}/n"] = scores["n"]
    return row


def write_outputs(results: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """OUT.csv (one row per run) and OUT.json (everything); returns the two paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [flat_metrics(r) for r in results]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    csv_path, json_path = out.with_suffix(".csv"), out.with_suffix(".json")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:  # whole or not at all
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(json_path, json.dumps(results, indent=1))
    return [csv_path, json_path]


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per run) for the printed table."""

    def cells(fn) -> list[str]:
        return [fn(r) for r in results]

    def val(r) -> str:
        if "loss" not in r:
            return "—"
        se = f" ± {r['stderr']:.4f}" if r["stderr"] is not None else " (exact)"
        return f"{r['loss']:.4f}{se}"

    rows = [
        ("objective", cells(lambda r: r["objective"])),
        ("epochs", cells(lambda r: str(r["epochs"]))),
        ("weights", cells(lambda r: "last (final)" if r["which"] == "last" else "best (early-stopped)")),
    ]
    if any("loss" in r for r in results):
        rows += [
            ("validation metric", cells(lambda r: r.get("kind", "—"))),
            ("measured on", cells(lambda r: r.get("validation_source", "—"))),
            ("loss (nats/token)", cells(val)),
            ("bits per byte", cells(lambda r: f"{r['bits_per_byte']:.4f}" if r.get("bits_per_byte") else "—")),
            ("tokens", cells(lambda r: f"{r['n_tokens']:,}" if "n_tokens" in r else "—")),
            ("MC passes", cells(lambda r: str(r.get("passes", "—")))),
        ]
    if any("likelihood" in r for r in results):
        rows.append(("choice scoring", cells(_scoring)))
    tasks = list(dict.fromkeys(t for r in results for t in r.get("tasks", {})))
    for task in tasks:
        for name in ("acc", "acc_norm"):
            rows.append((f"{task} {name} [95% CI]", cells(lambda r, t=task, m=name: _acc(r, t, m))))
    return rows


def _scoring(r: dict[str, Any]) -> str:
    lk = r.get("likelihood")
    if not lk:
        return "—"
    if lk["estimator"] == "exact":
        return "exact log-likelihood"
    extra = f", {lk['mc_samples']} samples" if lk["estimator"] in ("stratified", "random_t") else ""
    return f"{lk['estimator']}{extra}" + (f", cfg {lk['cfg_scale']}" if lk["cfg_scale"] else "")


def _acc(r: dict[str, Any], task: str, name: str) -> str:
    s = r.get("tasks", {}).get(task)
    if s is None:
        return "—"
    lo, hi = s[f"{name}_ci95"]
    return f"{s[name]:.3f} [{lo:.3f}, {hi:.3f}] (n={s['n']})"


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "evaluation of " + (results[0]["run"] if len(results) == 1 else f"{len(results)} runs")
    bound = any(r.get("stderr") is not None for r in results)
    caption = "ELBO losses (MDM) are upper bounds on the NLL (fixed-seed MC passes)" if bound else None
    table = Table(title=title, caption=caption)
    table.add_column("metric")
    for r in results:
        table.add_column(Path(r["run"]).name or r["run"])
    for metric, cells in table_rows(results):
        table.add_row(metric, *cells)
    Console().print(table)
