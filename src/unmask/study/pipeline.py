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

PROTOCOLS = {
    "identical": "identical settings for both objectives (the paper's protocol)",
    "own_best": "each objective at its own best over the tuning grid",
}


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
    size, U, E, seed) the tuned point with the lowest final validation loss."""
    if protocol == "identical":
        return [r for r in rows if json.loads(r["tuned"]) == study.shared()]
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["objective"], r["size"], r["unique_tokens"], r["epochs"], r["seed"])
        if key not in best or r["final_val_loss"] < best[key]["final_val_loss"]:
            best[key] = r
    return list(best.values())


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
    from unmask.study.fit import FitError, Point, bootstrap, critical_compute, critical_compute_power_law, fit_law

    study = load_study(config)
    target = Path(study.out, FIT)
    if target.exists() and not target.is_file():
        raise ConfigError(f"{target} is a folder, where the fit is written; move it away and fit again")
    rows = finished_rows(study, config)
    result: dict[str, Any] = {"study": study.name, "N": "non-embedding parameters", "protocols": {}}
    for protocol in PROTOCOLS:
        chosen = protocol_rows(rows, study, protocol)
        fits, entry = {}, {"points": len(chosen), "objectives": {}, "critical_compute": {}}
        for objective in sorted({r["objective"] for r in chosen}):
            pts = [Point(r["non_embedding_params"], r["tokens_seen"], r["unique_tokens"], r["final_val_loss"])
                   for r in chosen if r["objective"] == objective]  # fmt: skip
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
                "only_at": fit.only_at,
                "notes": list(fit.notes),
            }
        if {"ar", "mdm"} <= set(fits):
            entry["critical_compute"] = _critical(fits, chosen, critical_compute, critical_compute_power_law)
        entry["observed"] = observed_crossover(chosen)
        result["protocols"][protocol] = entry
    atomic_write_text(target, json.dumps(result, indent=1, default=_jsonable))
    if not quiet:
        print(fit_summary(result))
    return result


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


def observed_crossover(rows: list[dict]) -> dict:
    """Per U, straight from the runs: MDM's and AR's best final loss, and the smallest epoch count (and
    compute) at which an MDM run beats every AR run."""
    out = {}
    for U in sorted({r["unique_tokens"] for r in rows}):
        ar = [r for r in rows if r["unique_tokens"] == U and r["objective"] == "ar"]
        mdm = sorted(
            (r for r in rows if r["unique_tokens"] == U and r["objective"] == "mdm"), key=lambda r: r["epochs"]
        )
        if not ar or not mdm:
            continue
        best_ar = min(ar, key=lambda r: r["final_val_loss"])
        beats = [r for r in mdm if r["final_val_loss"] < best_ar["final_val_loss"]]
        out[str(U)] = {
            "ar_best": best_ar["final_val_loss"],
            "ar_best_epochs": best_ar["epochs"],
            "mdm_best": min(r["final_val_loss"] for r in mdm),
            "mdm_beats_ar_from_epochs": beats[0]["epochs"] if beats else None,
            "mdm_beats_ar_from_flops": beats[0]["flops"] if beats else None,
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
    identical = protocol_rows(rows, study, "identical")
    provenance = Run(rows[0]["run"]).provenance()
    stamp = make_stamp(study, Path(config), rows, provenance, unigram)
    blocks = [
        Block("h1", f"Study {study.name}: when does diffusion beat autoregression?"),
        Block("p", stamp_text(stamp)),
        Block(
            "p",
            f"{len(rows)} finished runs under {study.out}. Every point is its own run with its own cosine "
            "schedule; a result is the run's final weights (MDM: ELBO with final_mc_passes, an upper bound "
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
    if study.tune:
        blocks += [
            Block("h2", "Results (each objective at its own best)"),
            Block("p", f"Per point, the lowest final loss over the tuning grid {study.tune}; the chosen values "
                       "in brackets. Choosing on the validation split makes these numbers slightly optimistic."),
            *_results_blocks(protocol_rows(rows, study, "own_best"), unigram, show_tuned=True),
        ]  # fmt: skip
    blocks += [Block("h2", "Findings"), *[Block("p", line) for line in findings(fitted, identical, unigram)]]
    for protocol, entry in fitted["protocols"].items():
        blocks.append(Block("h2", f"Fit: {PROTOCOLS[protocol]}"))
        if protocol == "own_best" and not study.tune:
            blocks.append(Block("p", "This study has no tuning grid: each objective's own best is its only "
                                     "setting, so this protocol equals the identical-settings one above."))  # fmt: skip
            continue
        blocks += _fit_blocks(entry, PAPER)
    fits = _fits_of(fitted["protocols"].get("identical", {}))
    if fits:
        blocks.append(Block("figure", (figure_fit(identical, fits, out), "Fitted vs observed; effective data")))
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


def _results_blocks(rows: list[dict], unigram: dict[int, float], show_tuned: bool = False) -> list:
    """Per U, a table of final losses by epochs: AR, MDM and MDM's distance below the unigram level."""
    from unmask.study.report import Block

    def cell(row):
        if row is None or not show_tuned:
            return None if row is None else row["final_val_loss"]
        chosen = ", ".join(f"{k} {v:g}" for k, v in json.loads(row["tuned"]).items())
        return f"{row['final_val_loss']:.4f} ({chosen})"

    blocks = []
    for U, level in unigram.items():
        table = []
        for e in sorted({r["epochs"] for r in rows if r["unique_tokens"] == U}):
            cells = {r["objective"]: r for r in rows if r["unique_tokens"] == U and r["epochs"] == e}
            mdm = cells.get("mdm")
            table.append([e, cell(cells.get("ar")), cell(mdm), None if mdm is None else level - mdm["final_val_loss"]])
        blocks += [
            Block("p", f"U = {U:,} unique tokens; unigram cross-entropy of the validation split: {level:.3f} nats "
                       "(a model that ignores context)."),
            Block("table", (["epochs", "AR final loss", "MDM final loss", "MDM below unigram"], table)),
        ]  # fmt: skip
    return blocks


def findings(fitted: dict, rows: list[dict], unigram: dict[int, float]) -> list[str]:
    """What the runs and the fit show, computed (never hard-coded), per protocol."""
    lines = []
    for U, level in unigram.items():
        mdm = [r["final_val_loss"] for r in rows if r["unique_tokens"] == U and r["objective"] == "mdm"]
        if mdm:
            lines.append(f"U = {U:,}: MDM's best run ends {level - min(mdm):.2f} nats below the unigram "
                         f"cross-entropy of the validation split ({level:.3f}).")  # fmt: skip
    lines += _outside_the_law(rows, unigram)
    for protocol, entry in fitted["protocols"].items():
        name = PROTOCOLS[protocol]
        fits = entry["objectives"]
        rd = {o: f.get("values", {}).get("rd_star") for o, f in fits.items()}
        ci = {o: f.get("intervals_95", {}).get("rd_star") for o, f in fits.items()}
        if rd.get("ar") and rd.get("mdm") and ci.get("ar") and ci.get("mdm"):
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
        for U, o in entry.get("observed", {}).items():
            if o["mdm_beats_ar_from_epochs"]:
                at = o["mdm_beats_ar_from_epochs"]
                lines.append(f"{name}, U = {int(U):,}: the crossover is observed: MDM at {at} "
                             f"epochs ({o['mdm_beats_ar_from_flops']:.3g} FLOPs) beats AR's best run "
                             f"({o['ar_best']:.3f} at {o['ar_best_epochs']} epochs).")  # fmt: skip
            else:
                lines.append(f"{name}, U = {int(U):,}: no crossover observed: MDM's best {o['mdm_best']:.3f} vs AR's "
                             f"best {o['ar_best']:.3f} ({o['mdm_best'] - o['ar_best']:+.3f} nats).")  # fmt: skip
        crit = entry.get("critical_compute", {}).get("per_U", {})
        found = {U: c for U, c in crit.items() if c.get("compute")}
        if found:
            lines.append(
                f"{name}: the fitted laws cross (extrapolated C_crit) at "
                + ", ".join(f"U = {int(U):,}: {c['compute']:.3g} FLOPs" for U, c in found.items())
                + "."
            )
        elif crit:
            lines.append(f"{name}: no extrapolated crossover: {next(iter(crit.values()))['reason']}.")
    return lines


def _outside_the_law(rows: list[dict], unigram: dict[int, float], margin: float = 0.05) -> list[str]:
    """Where the runs break the law's premises: a final loss that rises with repetition (overfitting; the law's
    loss only saturates), and single-epoch runs that sit on the unigram plateau (so the single-epoch stage of
    the fit describes the plateau, not the law's regime)."""
    lines = []
    for objective in sorted({r["objective"] for r in rows}):
        rising, flat = [], []
        for U, level in unigram.items():
            runs = sorted((r for r in rows if r["objective"] == objective and r["unique_tokens"] == U),
                          key=lambda r: r["epochs"])  # fmt: skip
            if not runs:
                continue
            best = min(runs, key=lambda r: r["final_val_loss"])
            if runs[-1]["final_val_loss"] > best["final_val_loss"] + margin:
                rising.append(f"U = {U:,}: {best['final_val_loss']:.3f} at {best['epochs']} epochs to "
                              f"{runs[-1]['final_val_loss']:.3f} at {runs[-1]['epochs']}")  # fmt: skip
            if runs[0]["epochs"] == 1 and runs[0]["final_val_loss"] > level - margin:
                flat.append(U)
        if rising:
            lines.append(f"{objective.upper()}'s final loss rises with repetition ({'; '.join(rising)}): "
                         "overfitting, which the data-constrained law cannot represent (its loss never rises "
                         "with repetition), so these points misfit and weaken every test of the fit.")  # fmt: skip
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
        cells = []
        for o in objectives:
            fit = entry["objectives"][o]
            if "error" in fit:
                cells.append("no fit")
            elif name in fit["values"]:
                ci = fit["intervals_95"].get(name)
                value = fit["values"][name]
                cells.append(f"{value:.4g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
            else:
                cells.append("not identified: " + fit["unidentified"].get(name, "?"))
        ref = " / ".join(f"{o.upper()} ≈ {paper[o][name]:g}" for o in objectives if name in paper.get(o, {}))
        table.append([name, *cells, ref or "—"])
    blocks = [Block("table", (header, table))]
    crit = entry.get("critical_compute", {})
    if crit:
        rows = [[f"{int(U):,}", c["compute"], c.get("epochs"), c["reason"] or "crossing found"]
                for U, c in crit["per_U"].items()]  # fmt: skip
        blocks.append(Block("table", (["U", "C_crit (FLOPs)", "at epochs", "note"], rows)))
        law = crit.get("power_law", {})
        blocks.append(Block("p", f"C_crit ∝ U^k: k = {law['k']:.3g}" if "k" in law else
                                 f"C_crit power law: {law.get('error', 'not fitted')}"))  # fmt: skip
    observed = entry.get("observed", {})
    if observed:
        rows = [[f"{int(U):,}", o["ar_best"], o["ar_best_epochs"], o["mdm_best"], o["mdm_beats_ar_from_epochs"]]
                for U, o in observed.items()]  # fmt: skip
        blocks.append(
            Block("table", (["U", "AR best", "at epochs", "MDM best", "MDM beats AR's best from epochs"], rows))
        )
    return blocks


def _fits_of(entry: dict) -> dict:
    """The FitResults fit.json recorded for one protocol (objectives that could not be fitted left out)."""
    from unmask.study.fit import FitResult

    return {
        objective: FitResult(fit["values"], fit["unidentified"], fit.get("only_at", {}), tuple(fit["notes"]))
        for objective, fit in entry.get("objectives", {}).items()
        if "error" not in fit
    }
