"""`unmask study run | fit | report CONFIG`: the grid of runs, the scaling-law fit, the report.

run     prepare one data folder per U, train every point (finished ones skipped, unfinished ones
        resumed, failed ones recorded in OUT/failures.json and retried only with --retry), then
        write OUT/results.csv (+ .parquet)
fit     the data-constrained law per objective and protocol, bootstrap intervals, C_crit(U) and its
        power law → OUT/fit.json; parameters the points cannot determine are named, not printed
report  figures (PNG + SVG) and OUT/report/report.md + report.html (self-contained)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from unmask.checkpoint import atomic_write_text
from unmask.config import ConfigError
from unmask.study.files import FAILURES, FIT, read_failures, read_fit, set_aside_damaged, study_rows
from unmask.study.grid import StudyConfig, data_dir, jobs, load_study, prepare_data
from unmask.study.results import results_table, write_table
from unmask.study.stats import Paired, by_setting, paired, seed_summary, setting_key

PROTOCOLS = {
    "identical": "identical settings for both objectives (the paper's protocol)",
    "own_best": "each objective at its own best over the tuning grid",
    "identical_early_stopped": "EARLY-STOPPED, identical settings: each run's lowest validation loss (best "
    "checkpoint), not its result",
    "own_best_early_stopped": "EARLY-STOPPED, each objective at its own best: each run's lowest validation loss "
    "(best checkpoint), not its result",
}
"""Each fit: which runs (identical settings or own best) and which loss. The early-stopped fits use the lowest point
of each run's validation curve (what an AR user would keep; MDM's curve uses eval_mc_passes, so it is noisier
and biased low by the minimum) and are labelled in every table, figure and JSON field they reach."""


def protocol_loss(protocol: str) -> str:
    """The results column a protocol's fit and comparisons use."""
    return "best_val_loss" if protocol.endswith("_early_stopped") else "final_val_loss"


def run_study(config: str | Path, retry: bool = False, workers: int | None = None, quiet: bool = False) -> dict:
    """Train every point of the study; returns {name: None or its error} for the points run now."""
    study = load_study(config)
    out = Path(study.out)
    failed_before = read_failures(study)  # a damaged record is refused before any work
    out.mkdir(parents=True, exist_ok=True)
    set_aside_damaged(study)  # what cannot be read or resumed is trained (or prepared) again; nothing is deleted
    prepare_data(study)
    failures_path = out / FAILURES
    todo = [j for j in jobs(study) if retry or j.name not in failed_before]
    skipped = sorted(set(failed_before) - {j.name for j in todo})
    if study.runner == "ray":
        from unmask.study.ray_runner import run_jobs_ray

        outcome = run_jobs_ray(todo, quiet=quiet, raise_errors=False)
    else:
        from unmask.study.local import run_jobs

        outcome = run_jobs(todo, workers if workers is not None else study.workers, quiet=quiet, raise_errors=False)
    failed = {n: e for n, e in outcome.items() if e} | {n: failed_before[n] for n in skipped}
    atomic_write_text(failures_path, json.dumps(failed, indent=1))
    paths = write_table(results_table(study), out / "results")
    if not quiet:
        done = sum(e is None for e in outcome.values())
        print(f"{study.name}: {done}/{len(outcome)} points trained or already finished; table: {paths[0]}")
        for name, error in sorted(failed.items()):
            print(f"  failed: {name}: {error}" + ("" if retry else " (retry with --retry true)"))
    return outcome


def finished_rows(study: StudyConfig, config: str | Path) -> list[dict[str, Any]]:
    """The finished points' rows, once the folder is checked against results.csv (unmask.study.files)."""
    rows = [r for r in study_rows(study, config) if r["status"] == "finished"]
    if not rows:
        raise ConfigError(f"study {study.name}: no finished run under {study.out}; run `unmask study run` first")
    return rows


def protocol_rows(rows: list[dict], study: StudyConfig, protocol: str) -> list[dict]:
    """identical: the points at the shared config's values of the tuned fields; own_best: per (objective,
    size, U, E) the tuned setting with the lowest final validation loss (mean over seeds), all its seeds."""
    if protocol == "identical":
        return [r for r in rows if json.loads(r["tuned"]) == study.shared(r["objective"])]
    best: dict[tuple, dict] = {}
    for s in seed_summary(rows):
        key = (s["objective"], s["size"], s["unique_tokens"], s["epochs"])
        if key not in best or s["final_val_loss"] < best[key]["final_val_loss"]:
            best[key] = s
    chosen = {setting_key(s) for s in best.values()}
    return [r for r in rows if setting_key(r) in chosen]


def unigram_cross_entropy(data_path: Path) -> float:
    """The plateau a model that ignores context sits on: validation tokens (each sequence's first excluded,
    as validation scores them) under the add-one-smoothed unigram distribution of the training split."""
    from unmask.data.dataset import TokenData

    data = TokenData(data_path)
    counts = np.bincount(np.asarray(data.tokens["train"]), minlength=data.vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    val = np.asarray(data.tokens["val"])
    scored = np.ones(len(val), dtype=bool)
    scored[:: data.seq_len] = False  # each validation sequence's first token is context
    return float(-logp[val[scored]].mean())


def fit_study(config: str | Path, n_boot: int = 200, quiet: bool = False) -> dict:
    """Fit both protocols; write OUT/fit.json; return it."""
    from unmask.study.fit import FitError, bootstrap, critical_compute, critical_compute_power_law, fit_law

    study = load_study(config)
    target = Path(study.out, FIT)
    if target.exists() and not target.is_file():
        raise ConfigError(f"{target} is a folder, where the fit is written; move it away and fit again")
    rows = finished_rows(study, config)
    result: dict[str, Any] = {"study": study.name, "N": "non-embedding parameters", "protocols": {}}
    for protocol in PROTOCOLS:
        loss = protocol_loss(protocol)
        chosen = protocol_rows(rows, study, protocol.removesuffix("_early_stopped"))
        fits, entry = {}, {"points": len(chosen), "loss": loss, "objectives": {}, "critical_compute": {}}
        for objective in sorted({r["objective"] for r in chosen}):
            pts = fit_points(chosen, objective, loss)
            try:
                fit = fit_law(pts)
            except FitError as e:
                entry["objectives"][objective] = {"error": str(e), "points": len(pts)}
                continue
            fits[objective] = fit
            intervals = bootstrap(pts, n_boot=n_boot) if n_boot else {}
            entry["objectives"][objective] = {
                "points": len(pts),
                "values": fit.values,
                "intervals_95": {k: list(v[:2]) for k, v in intervals.items()},
                "unidentified": fit.unidentified,
                "lower_bounds": fit.lower_bounds,
                "only_at": fit.only_at,
                "notes": list(fit.notes),
            }
        grid = [r for r in chosen if study.in_grid(r)]
        entry["repeated_runs"] = repeated_runs_fit(grid, loss, n_boot)
        if {"ar", "mdm"} <= set(fits):
            entry["critical_compute"] = _critical(fits, chosen, critical_compute, critical_compute_power_law)
        entry["observed"] = observed_crossover(grid, loss)
        result["protocols"][protocol] = entry
    atomic_write_text(target, json.dumps(result, indent=1, default=_jsonable))
    if not quiet:
        print(fit_summary(result))
    return result


def fit_points(rows: list[dict], objective: str, loss: str) -> list:
    """One objective's runs as the fit's (N, D, U, loss) points: N the non-embedding parameters."""
    from unmask.study.fit import Point

    return [Point(r["non_embedding_params"], r["tokens_seen"], r["unique_tokens"], r[loss])
            for r in rows if r["objective"] == objective]  # fmt: skip


REPEATED_RUNS = (
    "REPEATED-RUNS fit: E, B, beta and R_D* fitted together on the repeated runs alone (not the paper's two stages)"
)
"""The label of `repeated_runs_fit` wherever it is shown."""


def repeated_runs_fit(rows: list[dict], loss: str, n_boot: int) -> dict:
    """Per objective, `unmask.study.fit.fit_repeated` on the grid's repeated runs with bootstrap intervals, and
    the ratio R_D*(MDM)/R_D*(AR) with the percentile interval of paired resample ratios."""
    from unmask.study.fit import (
        FitError,
        bootstrap_draws,
        critical_compute,
        critical_compute_power_law,
        fit_repeated,
        percentile_interval,
    )

    out: dict[str, Any] = {"label": REPEATED_RUNS, "objectives": {}}
    rd_draws, results = {}, {}
    for objective in sorted({r["objective"] for r in rows}):
        pts = fit_points(rows, objective, loss)
        try:
            fit = results[objective] = fit_repeated(pts)
        except FitError as e:
            out["objectives"][objective] = {"error": str(e)}
            continue
        draws = bootstrap_draws(pts, n_boot, point=fit, fitter=fit_repeated) if n_boot else {}
        intervals = {k: percentile_interval(v) for k, v in draws.items()}
        out["objectives"][objective] = {
            "points": fit.n_repeated,
            "values": fit.values,
            "intervals_95": {k: list(v[:2]) for k, v in intervals.items() if v is not None},
            "unidentified": fit.unidentified,
            "lower_bounds": fit.lower_bounds,
        }
        if "rd_star" in draws:
            rd_draws[objective] = draws["rd_star"]
    if {"ar", "mdm"} <= set(rd_draws):
        ratios = [m / a for m, a in zip(rd_draws["mdm"], rd_draws["ar"], strict=False)]  # ∞/∞: nan, dropped
        interval = percentile_interval(ratios)
        out["ratio_mdm_over_ar"] = {
            "estimate": results["mdm"].values["rd_star"] / results["ar"].values["rd_star"],
            "interval_95": list(interval[:2]) if interval else None,
        }
    if {"ar", "mdm"} <= set(results):  # at the grid's one model size, where these fits hold
        out["critical_compute"] = _critical(results, rows, critical_compute, critical_compute_power_law)
    return out


def _critical(fits, rows, critical_compute, power_law) -> dict:
    per_u, Us, Cs = {}, [], []
    sizes = sorted({r["non_embedding_params"] for r in rows})
    for U in sorted({r["unique_tokens"] for r in rows}):
        N = sizes[0] if len(sizes) == 1 else "optimal"
        c_range = None if len(sizes) == 1 else (6 * sizes[0] * U * 1e-2, 6 * sizes[-1] * U * 1e4)
        crossing = critical_compute(fits["ar"], fits["mdm"], U, N, c_range=c_range)
        per_u[str(U)] = {"compute": crossing.compute, "reason": crossing.reason, "loss": crossing.loss}
        if crossing.compute is not None:
            epochs = crossing.compute / (6 * sizes[0] * U) if len(sizes) == 1 else None
            per_u[str(U)]["epochs"] = epochs
            Us.append(U)
            Cs.append(crossing.compute)
    out: dict[str, Any] = {"per_U": per_u}
    try:
        law = power_law(Us, Cs)
        out["power_law"] = {"k": law.k, "coefficient": law.coefficient}
    except ValueError as e:
        out["power_law"] = {"error": str(e)}
    return out


def observed_crossover(rows: list[dict], loss: str = "final_val_loss") -> dict:
    """Per U, straight from the runs (means over seeds): AR's and MDM's best setting, MDM − AR paired by seed
    with its 95% interval, and the smallest epoch count (and compute) from which MDM's loss is below AR's best
    with an interval that excludes zero (`mdm_beats_ar_from_epochs`) or only in the mean (`..._in_the_mean`)."""
    out = {}
    for U in sorted({r["unique_tokens"] for r in rows}):
        at_u = [r for r in rows if r["unique_tokens"] == U]
        settings, seeds = seed_summary(at_u, loss), by_setting(at_u, loss)
        ar = [s for s in settings if s["objective"] == "ar"]
        mdm = sorted((s for s in settings if s["objective"] == "mdm"), key=lambda s: s["epochs"])
        if not ar or not mdm:
            continue
        best_ar = min(ar, key=lambda s: s[loss])
        best_mdm = min(mdm, key=lambda s: s[loss])
        versus_ar = {setting_key(s): paired(seeds[setting_key(s)], seeds[setting_key(best_ar)]) for s in mdm}
        beats = [s for s in mdm if versus_ar[setting_key(s)].below_zero]
        below = [s for s in mdm if s[loss] < best_ar[loss]]
        out[str(U)] = {
            "ar_best": best_ar[loss],
            "ar_best_epochs": best_ar["epochs"],
            "mdm_best": best_mdm[loss],
            "mdm_best_epochs": best_mdm["epochs"],
            "seeds": min(best_ar["n_seeds"], best_mdm["n_seeds"]),
            "mdm_minus_ar": dataclasses.asdict(versus_ar[setting_key(best_mdm)]),
            "mdm_beats_ar_from_epochs": beats[0]["epochs"] if beats else None,
            "mdm_beats_ar_from_flops": beats[0]["flops"] if beats else None,
            "mdm_below_ar_in_the_mean_from_epochs": below[0]["epochs"] if below else None,
        }
    return out


def fit_summary(result: dict) -> str:
    lines = []
    for protocol, entry in result["protocols"].items():
        lines.append(f"{protocol} ({PROTOCOLS[protocol]}), {entry['points']} runs:")
        for objective, fit in entry["objectives"].items():
            if "error" in fit:
                lines.append(f"  {objective}: no fit: {fit['error']}")
                continue
            ci = fit["intervals_95"].get("rd_star")
            rd = fit["values"].get("rd_star")
            rd_text = (f"R_D* = {rd:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")) if rd else (
                "R_D* not identified: " + fit["unidentified"].get("rd_star", "?"))  # fmt: skip
            lines.append(f"  {objective}: {rd_text}")
        if entry.get("repeated_runs"):
            lines.append("  " + _repeated_runs_text(entry["repeated_runs"]))
        for U, c in entry.get("critical_compute", {}).get("per_U", {}).items():
            text = f"C_crit = {c['compute']:.3g} FLOPs" if c["compute"] else c["reason"]
            lines.append(f"  U = {int(U):,}: {text}")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(type(value).__name__)


SCHEDULE_SENTENCE = {
    "cosine": "Every point is its own run with its own cosine schedule",
    "wsd": "Every point is its own run with a warmup-stable-decay schedule: the longest run of each setting is a "
    "trunk and each shorter one a decay branch forked from it, bitwise the separate run of its length (the "
    "schedule column of results.csv)",
}
"""How the report's opening says the runs were scheduled, per `train.optim.schedule`."""


def report_study(config: str | Path, quiet: bool = False) -> Path:
    """Figures and the Markdown + HTML report in OUT/report/; returns the Markdown path."""
    from unmask.run import Run
    from unmask.study.report import (
        PAPER,
        Block,
        figure_fit,
        figure_loss_vs_epochs,
        figure_loss_vs_flops,
        to_html,
        to_markdown,
    )
    from unmask.study.stamp import STAMP, make_stamp, stamp_text

    study = load_study(config)
    rows = finished_rows(study, config)
    fitted = read_fit(study, config) if (Path(study.out) / FIT).exists() else fit_study(config, quiet=True)
    try:
        unigram = {U: unigram_cross_entropy(data_dir(study, U)) for U in sorted({r["unique_tokens"] for r in rows})}
    except ConfigError as e:
        raise ConfigError(f"{e}; `unmask study run {config}` prepares a damaged data folder again") from None
    out = Path(study.out) / "report"
    out.mkdir(parents=True, exist_ok=True)
    grid = [r for r in rows if study.in_grid(r)]  # scaling points: the fit and their own table only
    identical = protocol_rows(grid, study, "identical")
    provenance = Run(rows[0]["run"]).provenance()
    stamp = make_stamp(study, Path(config), rows, provenance, unigram)
    blocks = [
        Block("h1", f"Study {study.name}: when does diffusion beat autoregression?"),
        Block("p", stamp_text(stamp)),
        Block(
            "p",
            f"{len(rows)} finished runs under {study.out}. {SCHEDULE_SENTENCE[study.train.optim.schedule]}; a "
            "result is the run's final weights (MDM: ELBO with final_mc_passes, an upper bound "
            "on its NLL; AR: exact NLL), both scored on the same validation tokens.",
        ),  # fmt: skip
        Block("h2", "Results (identical settings)"),
        *_results_blocks(identical, unigram),
    ]
    for row in identical:
        row["unigram"] = unigram[row["unique_tokens"]]
    blocks += [
        Block("figure", (figure_loss_vs_epochs(identical, out), "Final validation loss vs epochs, per U")),
        Block("figure", (figure_loss_vs_flops(identical, out), "Final validation loss vs training FLOPs")),
    ]
    if study.tuned():
        blocks += [
            Block("h2", "Results (each objective at its own best)"),
            Block("p", f"Per point, the lowest final loss over the tuning grid {study.tune}"
                       + (f" (and per objective {study.tune_objective})" if study.tune_objective else "")
                       + "; the chosen values "
                       "in brackets. Choosing on the validation split makes these numbers slightly optimistic."),
            *_results_blocks(protocol_rows(grid, study, "own_best"), unigram, show_tuned=True),
        ]  # fmt: skip
    blocks += _plateau_blocks(grid, unigram)
    if len(grid) < len(rows):
        blocks += _scaling_blocks([r for r in rows if not study.in_grid(r)], unigram)
    grid_unigram = {U: level for U, level in unigram.items() if U in study.unique_tokens}
    blocks += [Block("h2", "Findings"), *[Block("p", line) for line in findings(fitted, identical, grid_unigram)]]
    if study.downstream:
        blocks += _downstream_blocks(study, grid, out)
    for protocol, entry in fitted["protocols"].items():
        blocks.append(Block("h2", f"Fit: {PROTOCOLS[protocol]}"))
        if protocol.startswith("own_best") and not study.tuned():
            blocks.append(Block("p", "This study has no tuning grid: each objective's own best is its only "
                                     "setting, so this protocol equals the identical-settings one above."))  # fmt: skip
            continue
        blocks += _fit_blocks(entry, PAPER) + _repeated_runs_blocks(entry.get("repeated_runs"))
    fits = _fits_of(fitted["protocols"].get("identical", {}))
    if fits:
        fitted_rows = protocol_rows(rows, study, "identical")
        blocks.append(Block("figure", (figure_fit(fitted_rows, fits, out), "Fitted vs observed; effective data")))
    blocks += [
        Block("h2", "Configuration and hardware"),
        Block("code", Path(config).read_text()),
        Block(
            "p",
            f"Hardware: {provenance.get('platform')}, {provenance.get('cpu_count')} CPU cores, "
            f"torch {provenance.get('torch')}, {provenance.get('cuda') or 'no GPU'}.",
        ),  # fmt: skip
    ]
    # The folder is the whole result: report, table, fit and stamp, so a copy in docs/ can be verified alone.
    write_table(results_table(study), out / "results")
    atomic_write_text(out / "fit.json", json.dumps(fitted, indent=1))
    atomic_write_text(out / STAMP, json.dumps(stamp, indent=1))
    md = out / "report.md"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, f"unmask study {study.name}"))
    if not quiet:
        print(f"report: {md} and {out / 'report.html'}")
    return md


def _downstream_blocks(study: StudyConfig, rows: list[dict], out: Path) -> list:
    """Zero-shot accuracy (binomial standard error, Wilson 95% interval) of each objective's best setting at the
    largest budget, every seed of it, on the shipped cloze task."""
    from unmask.evaluation.cloze import BOOK, write_cloze
    from unmask.evaluation.zeroshot import evaluate_tasks
    from unmask.study.report import Block

    task = write_cloze(out / "austen_cloze.jsonl", n=study.downstream)
    U = max(r["unique_tokens"] for r in rows)
    table = []
    for protocol in ("identical", "own_best") if study.tuned() else ("identical",):
        chosen = [r for r in protocol_rows(rows, study, protocol) if r["unique_tokens"] == U]
        for objective in sorted({r["objective"] for r in chosen}):
            settings = [s for s in seed_summary(chosen) if s["objective"] == objective]
            best = min(settings, key=lambda s: s["final_val_loss"])
            for r in sorted((r for r in chosen if setting_key(r) == setting_key(best)), key=lambda r: r["seed"]):
                score = evaluate_tasks(r["run"], [str(task)], progress=False)[task.stem]
                acc, ci = f"{score['acc']:.3f} ± {score['acc_stderr']:.3f}", score["acc_ci95"]
                table.append([PROTOCOLS[protocol].split(" (")[0], r["name"], r["final_val_loss"], acc,
                              f"[{ci[0]:.3f}, {ci[1]:.3f}]"])  # fmt: skip
    return [
        Block("h2", "Downstream: zero-shot cloze"),
        Block(
            "p",
            f"{study.downstream} sentence endings of {BOOK} (never in any training budget here), four choices, "
            f"chance 0.25; each objective's best setting at U = {U:,} under each protocol, every seed; "
            "accuracy ± binomial standard error, Wilson 95% interval. MDM scores with the stratified count "
            "estimator (128 samples), AR exactly.",
        ),  # fmt: skip
        Block("table", (["protocol", "run", "final loss", "accuracy", "95% interval"], table)),
    ]


def tuned_text(value: Any) -> str:
    """A tuned value in a table: 0.002, 5, [3, 3] (a list axis such as mdm_t_beta; [] = off)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(tuned_text(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mean_cell(s: dict | None) -> float | str | None:
    """A table cell for one setting's final loss: the value (one seed) or mean ± standard error over seeds."""
    if s is None:
        return None
    return s["final_val_loss"] if s["n_seeds"] == 1 else f"{s['final_val_loss']:.4f} ± {s['final_val_loss_se']:.4f}"


def _results_blocks(rows: list[dict], unigram: dict[int, float], show_tuned: bool = False) -> list:
    """Per U, a table of final losses by epochs (mean ± standard error over seeds when there are several): AR,
    MDM and MDM's distance below the unigram level."""
    from unmask.study.report import Block

    def cell(s):
        value = _mean_cell(s)
        if s is None or not show_tuned:
            return value
        chosen = ", ".join(f"{k} {tuned_text(v)}" for k, v in json.loads(s["tuned"]).items())
        return f"{value if isinstance(value, str) else f'{value:.4f}'} ({chosen})"

    blocks = []
    summary = seed_summary(rows)
    seeds = sorted({r["seed"] for r in rows})
    budgets = {r["unique_tokens"] for r in rows}
    for U, level in ((U, level) for U, level in unigram.items() if U in budgets):
        table = []
        for e in sorted({s["epochs"] for s in summary if s["unique_tokens"] == U}):
            cells = {s["objective"]: s for s in summary if s["unique_tokens"] == U and s["epochs"] == e}
            mdm = cells.get("mdm")
            table.append([e, cell(cells.get("ar")), cell(mdm), None if mdm is None else level - mdm["final_val_loss"]])
        over = f"; mean ± standard error over seeds {seeds}" if len(seeds) > 1 else ""
        blocks += [
            Block("p", f"U = {U:,} unique tokens; unigram cross-entropy of the validation split: {level:.3f} nats "
                       f"(a model that ignores context){over}."),
            Block("table", (["epochs", "AR final loss", "MDM final loss", "MDM below unigram"], table)),
        ]  # fmt: skip
    return blocks


PLATEAU_MARGIN = 0.05
"""A run has left the unigram plateau at its first validation at least this far below the unigram level."""


def on_plateau(loss: float, level: float, margin: float = PLATEAU_MARGIN) -> bool:
    """Whether a loss is within `margin` nats of (or above) the unigram level `level`."""
    return loss > level - margin


def plateau_exit(run: str | Path, level: float, margin: float = PLATEAU_MARGIN) -> float | None:
    """The epoch of a run's first validation loss at least `margin` nats below `level` (None: never)."""
    from unmask.run import read_metrics

    for record in read_metrics(run):
        if "val_loss" in record and not on_plateau(record["val_loss"], level, margin):
            return record.get("epoch")
    return None


def _plateau_blocks(rows: list[dict], unigram: dict[int, float]) -> list:
    """Per MDM setting of the grid, the epoch each seed leaves the unigram plateau, and its final loss."""
    from unmask.study.report import Block

    mdm = [r for r in rows if r["objective"] == "mdm"]
    if not mdm:
        return []
    table = []
    for s in sorted(seed_summary(mdm), key=lambda s: (s["unique_tokens"], s["epochs"], s["tuned"])):
        runs = sorted((r for r in mdm if setting_key(r) == setting_key(s)), key=lambda r: r["seed"])
        exits = [plateau_exit(r["run"], unigram[r["unique_tokens"]]) for r in runs]
        tuned = ", ".join(f"{k} {tuned_text(v)}" for k, v in json.loads(s["tuned"]).items()) or "—"
        table.append([f"{s['unique_tokens']:,}", s["epochs"], tuned,
                      " / ".join("never" if e is None else f"{e:g}" for e in exits), _mean_cell(s)])  # fmt: skip
    return [
        Block("h2", "Leaving the unigram plateau (MDM)"),
        Block("p", f"The epoch of each seed's first validation at least {PLATEAU_MARGIN} nats below the unigram "
                   "cross-entropy of the validation split (seeds in order; 'never': not within the run)."),
        Block("table", (["U", "epochs", "setting", "leaves the plateau at epoch", "final loss"], table)),
    ]  # fmt: skip


def _scaling_blocks(rows: list[dict], unigram: dict[int, float]) -> list:
    """The single-epoch scaling points (study.scaling): final loss per model size and U, for stage 1 of the fit."""
    from unmask.study.report import Block

    summary = seed_summary(rows)
    table = []
    for N, U in sorted({(s["non_embedding_params"], s["unique_tokens"]) for s in summary}):
        cells = {s["objective"]: s for s in summary if (s["non_embedding_params"], s["unique_tokens"]) == (N, U)}
        size = next(iter(cells.values()))["size"]
        table.append([size, N, f"{U:,}", unigram[U], _mean_cell(cells.get("ar")), _mean_cell(cells.get("mdm"))])
    plateau_lines = []
    for objective in sorted({s["objective"] for s in summary}):
        flat = sorted({s["unique_tokens"] for s in summary if s["objective"] == objective
                       and on_plateau(s["final_val_loss"], unigram[s["unique_tokens"]])})  # fmt: skip
        if flat:
            plateau_lines.append(f"{objective.upper()}'s single-epoch runs end on the unigram plateau (within "
                              f"{PLATEAU_MARGIN} nats) at U = {', '.join(f'{U:,}' for U in flat)} for some size: "
                              "there stage 1 of the fit describes the plateau, not the law's regime.")  # fmt: skip
    return [
        Block("h2", "Single-epoch scaling points"),
        Block("p", "One epoch at the shared settings, per model size and unique-token budget (study.scaling): the "
                   "points stage 1 of the fit (E, A, alpha, B, beta) rests on; the comparisons above leave them out."
                   + (" Mean ± standard error over seeds." if any(s["n_seeds"] > 1 for s in summary) else "")),
        Block("table", (["size", "non-embedding parameters", "U", "unigram", "AR final loss", "MDM final loss"],
                        table)),
        *[Block("p", line) for line in plateau_lines],
    ]  # fmt: skip


def findings(fitted: dict, rows: list[dict], unigram: dict[int, float]) -> list[str]:
    """What the runs and the fit show, computed (never hard-coded), per protocol."""
    lines = []
    summary = seed_summary(rows)
    for U, level in unigram.items():
        mdm = [s for s in summary if s["unique_tokens"] == U and s["objective"] == "mdm"]
        if mdm:
            best = min(mdm, key=lambda s: s["final_val_loss"])
            what = "run" if best["n_seeds"] == 1 else f"setting (mean of {best['n_seeds']} seeds)"
            lines.append(f"U = {U:,}: MDM's best {what} ends {level - best['final_val_loss']:.2f} nats below the "
                         f"unigram cross-entropy of the validation split ({level:.3f}).")  # fmt: skip
    lines += _outside_the_law(rows, unigram)
    for protocol, entry in fitted["protocols"].items():
        name = PROTOCOLS[protocol]
        fits = entry["objectives"]
        rd = {o: f.get("values", {}).get("rd_star") for o, f in fits.items()}
        ci = {o: f.get("intervals_95", {}).get("rd_star") for o, f in fits.items()}
        bound = {o: f.get("lower_bounds", {}).get("rd_star") for o, f in fits.items()}
        if rd.get("ar") and ci.get("ar") and not rd.get("mdm") and bound.get("mdm"):
            above = bound["mdm"] > ci["ar"][1]
            lines.append(
                f"{name}: R_D* = {rd['ar']:.3g} [{ci['ar'][0]:.3g}, {ci['ar'][1]:.3g}] for AR; for MDM only a 95% "
                f"lower bound, R_D* ≥ {bound['mdm']:.3g} (no decay fits as well), which "
                + ("lies above AR's whole interval: MDM's repeated data keeps its value longer, as far as the fitted "
                   "law describes MDM's runs." if above else "does not exceed AR's interval: no difference is "
                   "established.")
            )  # fmt: skip
        elif rd.get("ar") and rd.get("mdm") and ci.get("ar") and ci.get("mdm"):
            apart = ci["mdm"][0] > ci["ar"][1]
            lines.append(
                f"{name}: R_D* = {rd['mdm']:.3g} for MDM vs {rd['ar']:.3g} for AR; the 95% intervals "
                + ("do not overlap (MDM > AR)." if apart else "overlap: no difference is established.")
            )
        else:
            why = "; ".join(f"{o.upper()}: {f.get('unidentified', {}).get('rd_star', f.get('error', '?'))}"
                            for o, f in fits.items() if not rd.get(o))  # fmt: skip
            lines.append(f"{name}: R_D* is not determined by these runs, so R_D*(MDM) > R_D*(AR) is neither shown "
                         f"nor refuted ({why}).")  # fmt: skip
        if entry.get("repeated_runs"):
            lines.append(f"{name}: " + _repeated_runs_text(entry["repeated_runs"]))
        for U, o in entry.get("observed", {}).items():
            lines.append(f"{name}, U = {int(U):,}: " + _crossover_text(o))
        lines += _critical_text(name, entry.get("critical_compute", {}))
        if entry.get("repeated_runs"):
            lines += _critical_text(
                f"{name}, {entry['repeated_runs']['label']}", entry["repeated_runs"].get("critical_compute", {})
            )
    return lines


def _critical_text(name: str, crit: dict) -> list[str]:
    """The extrapolated crossover of the fitted laws as a finding (none when nothing was computed)."""
    per_u = crit.get("per_U", {})
    found = {U: c for U, c in per_u.items() if c.get("compute")}
    if found:
        where = ", ".join(f"U = {int(U):,}: {c['compute']:.3g} FLOPs" for U, c in found.items())
        return [f"{name}: the fitted laws cross (extrapolated C_crit) at {where}."]
    return [f"{name}: no extrapolated crossover: {next(iter(per_u.values()))['reason']}."] if per_u else []


def _repeated_runs_text(fitted: dict) -> str:
    """The repeated-runs fit's R_D* for both objectives as one finding."""
    parts = []
    for objective, fit in fitted["objectives"].items():
        rd, ci = fit.get("values", {}).get("rd_star"), fit.get("intervals_95", {}).get("rd_star")
        if rd is None:
            parts.append(f"{objective.upper()}: " + fit.get("unidentified", {}).get("rd_star", fit.get("error", "?")))
        else:
            parts.append(f"{objective.upper()}: R_D* = {rd:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
    text = f"{fitted['label']}: " + "; ".join(parts)
    ratio = fitted.get("ratio_mdm_over_ar")
    if ratio and ratio["interval_95"]:
        low, high = ratio["interval_95"]
        verdict = "no difference is established"
        if low > 1 or high < 1:
            verdict = f"{'MDM' if low > 1 else 'AR'}'s repeated data keep their value longer (the interval excludes 1)"
        text += f"; R_D*(MDM)/R_D*(AR) = {ratio['estimate']:.3g} [{low:.3g}, {high:.3g}]: {verdict}"
    return text + "."


def _crossover_text(o: dict) -> str:
    """The verdict at one U: a crossover is stated only where MDM − AR's 95% interval (paired by seed) lies
    below zero."""
    diff = Paired(**o["mdm_minus_ar"])
    losses = (f"MDM's best {o['mdm_best']:.3f} ({o['mdm_best_epochs']} epochs) vs AR's best {o['ar_best']:.3f} "
              f"({o['ar_best_epochs']} epochs): {diff.text()}")  # fmt: skip
    if o["mdm_beats_ar_from_epochs"]:
        return (f"crossover: from {o['mdm_beats_ar_from_epochs']} epochs ({o['mdm_beats_ar_from_flops']:.3g} FLOPs) "
                f"MDM is below AR's best with a 95% interval that excludes zero; {losses}.")  # fmt: skip
    if o["mdm_below_ar_in_the_mean_from_epochs"]:
        why = "one seed gives no interval" if diff.low is None else "the 95% interval does not exclude zero"
        return (f"no crossover is stated: MDM is below AR's best in the mean from "
                f"{o['mdm_below_ar_in_the_mean_from_epochs']} epochs, but {why}; {losses}.")  # fmt: skip
    return f"no crossover: {losses}."


def _outside_the_law(rows: list[dict], unigram: dict[int, float], margin: float = 0.05) -> list[str]:
    """Where the runs break the law's premises: a final loss that rises with repetition (overfitting; the law's
    loss only saturates), and single-epoch runs that sit on the unigram plateau (so the single-epoch stage of
    the fit describes the plateau, not the law's regime)."""
    lines = []
    summary, seeds = seed_summary(rows), by_setting(rows)
    for objective in sorted({r["objective"] for r in rows}):
        rising, flat, improving = [], [], []
        for U, level in unigram.items():
            runs = sorted((s for s in summary if s["objective"] == objective and s["unique_tokens"] == U),
                          key=lambda s: s["epochs"])  # fmt: skip
            if not runs:
                continue
            best, last = min(runs, key=lambda s: s["final_val_loss"]), runs[-1]
            if last["final_val_loss"] > best["final_val_loss"] + margin:
                diff = paired(seeds[setting_key(last)], seeds[setting_key(best)])
                rising.append(f"U = {U:,}: {best['final_val_loss']:.3f} at {best['epochs']} epochs to "
                              f"{last['final_val_loss']:.3f} at {last['epochs']}, {diff.text()}")  # fmt: skip
            elif best is last and len(runs) > 1:
                diff = paired(seeds[setting_key(last)], seeds[setting_key(runs[-2])])
                improving.append(f"U = {U:,}: {runs[-2]['epochs']} → {last['epochs']} epochs {diff.text()}")
            if runs[0]["epochs"] == 1 and on_plateau(runs[0]["final_val_loss"], level, margin):
                flat.append(U)
        if rising:
            lines.append(f"{objective.upper()}'s final loss rises with repetition ({'; '.join(rising)}): "
                         "overfitting, which the data-constrained law cannot represent (its loss never rises "
                         "with repetition), so these points misfit and weaken every test of the fit.")  # fmt: skip
        if improving:
            lines.append(f"{objective.upper()} is still improving at its longest runs ({'; '.join(improving)}): "
                         "its best epoch count lies beyond the grid.")  # fmt: skip
        if flat and len(flat) == len(unigram):
            lines.append(f"{objective.upper()}'s single-epoch runs sit on the unigram plateau at every U (within "
                         f"{margin} nats): the single-epoch stage of the fit (E, B, beta) describes the plateau, not "
                         "the law's regime, so its constants are not comparable with the paper's.")  # fmt: skip
    return lines


def _fit_blocks(entry: dict, paper: dict) -> list:
    from unmask.study.report import Block

    names = ["E", "A", "alpha", "B", "beta", "rd_star", "rn_star"]
    objectives = list(entry["objectives"])
    header = ["parameter", *[f"{o.upper()} [95% CI]" for o in objectives], "paper (2507.15857)"]
    table = []
    for name in names:
        cells = [_param_cell(entry["objectives"][o], name) for o in objectives]
        ref = " / ".join(f"{o.upper()} ≈ {paper[o][name]:g}" for o in objectives if name in paper.get(o, {}))
        table.append([name, *cells, ref or "—"])
    blocks = [Block("table", (header, table)), *_critical_blocks(entry.get("critical_compute", {}))]
    observed = entry.get("observed", {})
    if observed:
        rows = [[f"{int(U):,}", o["ar_best"], o["ar_best_epochs"], o["mdm_best"], o["mdm_best_epochs"],
                 Paired(**o["mdm_minus_ar"]).text(), o["mdm_beats_ar_from_epochs"]]
                for U, o in observed.items()]  # fmt: skip
        header = ["U", "AR best", "at epochs", "MDM best", "at epochs", "MDM − AR (paired by seed)",
                  "MDM beats AR's best from epochs (95% CI below 0)"]  # fmt: skip
        blocks.append(Block("table", (header, rows)))
    return blocks


def _param_cell(fit: dict, name: str) -> str:
    """One parameter of a recorded fit as a table cell: its value and 95% interval, or why it is not identified
    ("no fit" when the objective could not be fitted at all)."""
    if "error" in fit:
        return "no fit"
    if name in fit["values"]:
        ci = fit["intervals_95"].get(name)
        return f"{fit['values'][name]:.4g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
    return "not identified: " + fit["unidentified"].get(name, "?")


def _critical_blocks(crit: dict) -> list:
    """The extrapolated critical compute per U, and its power law in U."""
    from unmask.study.report import Block

    if not crit:
        return []
    rows = [[f"{int(U):,}", c["compute"], c.get("epochs"), c["reason"] or "crossing found"]
            for U, c in crit["per_U"].items()]  # fmt: skip
    law = crit.get("power_law", {})
    power = f"C_crit ∝ U^k: k = {law['k']:.3g}" if "k" in law else f"C_crit power law: {law.get('error', 'not fitted')}"
    return [Block("table", (["U", "C_crit (FLOPs)", "at epochs", "note"], rows)), Block("p", power)]


def _repeated_runs_blocks(fitted: dict | None) -> list:
    """The repeated-runs fit's table, labelled, with the ratio R_D*(MDM)/R_D*(AR)."""
    from unmask.study.report import Block

    if not fitted:
        return []
    objectives = fitted["objectives"]
    table = []
    for name in ("E", "B", "beta", "rd_star"):
        cells = [
            "no fit: " + fit["error"] if "error" in fit
            else "0: the fit drives the floor to zero (none resolved)" if name == "E" and fit["values"]["E"] == 0
            else _param_cell(fit, name)
            for fit in objectives.values()
        ]  # fmt: skip
        table.append([name, *cells])
    header = ["parameter", *[f"{o.upper()} [95% CI]" for o in objectives]]
    blocks = [Block("p", fitted["label"] + ":"), Block("table", (header, table))]
    ratio = fitted.get("ratio_mdm_over_ar")
    if ratio:
        ci = ratio["interval_95"]
        blocks.append(Block("p", f"R_D*(MDM)/R_D*(AR) = {ratio['estimate']:.3g}"
                                 + (f" [{ci[0]:.3g}, {ci[1]:.3g}] (95%, paired resamples)" if ci else "")))  # fmt: skip
    return blocks + _critical_blocks(fitted.get("critical_compute", {}))


def _fits_of(entry: dict) -> dict:
    """The FitResults fit.json recorded for one protocol (objectives that could not be fitted left out)."""
    from unmask.study.fit import FitResult

    return {
        objective: FitResult(fit["values"], fit["unidentified"], fit.get("only_at", {}), tuple(fit["notes"]))
        for objective, fit in entry.get("objectives", {}).items()
        if "error" not in fit
    }
