"""`unmask study verify REPORT_DIR`: re-run points of a committed study and compare them with its table.

A committed number is only a claim while the shipped code still produces it. The report folder holds the
study config (stamp.json) and every run's result (results.csv); verify rebuilds the chosen points in a
scratch folder from that alone (data prepared again, runs trained from scratch) and compares each run's
config hash and final validation loss with the table. Same code, CPU and torch build: bitwise equal. On
another CPU family the kernels round differently and long runs drift apart: MDM's 96-epoch points of the
mini study moved by up to 0.1 nats (Intel Xeon with AVX-512 against the AMD EPYC they were made on), AR's
shorter ones by under 0.005; verify says when the CPU differs, and `tolerance` is the user's to widen.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unmask.checkpoint import cpu_model
from unmask.config import ConfigError, UnmaskError
from unmask.study.grid import ScalingPoints, StudyConfig, jobs, prepare_data, study_from_dict
from unmask.study.results import read_table, row_of
from unmask.study.stamp import read_stamp

TOLERANCE = 5e-3
"""Nats: a re-run's final loss within this of the committed one reproduces it (0 on the same CPU and build)."""


class StudyNotReproduced(UnmaskError):
    """Some re-run points differ from the committed table (exit code 1: the check ran and failed)."""


@dataclass
class Check:
    name: str
    committed: float
    rerun: float | None
    problem: str | None
    """None: reproduced; otherwise what differs."""


def verdict_points(rows: list[dict], study: StudyConfig) -> list[str]:
    """The runs the report's verdicts rest on: per protocol and U, each objective's best run (the crossover or
    its absence) and its longest run (still improving / overfitting)."""
    from unmask.study.pipeline import protocol_rows

    names: list[str] = []
    protocols = ["identical", "own_best"] if study.tuned() else ["identical"]
    for protocol in protocols:
        chosen = [r for r in protocol_rows(rows, study, protocol) if study.in_grid(r)]
        for key in sorted({(r["objective"], r["unique_tokens"]) for r in chosen}):
            group = [r for r in chosen if (r["objective"], r["unique_tokens"]) == key]
            for r in (min(group, key=lambda r: r["final_val_loss"]), max(group, key=lambda r: r["epochs"])):
                if r["name"] not in names:
                    names.append(r["name"])
    return names


def choose(rows: list[dict], study: StudyConfig, points: str, seed: int) -> list[str]:
    """'verdict', 'all', a number K (K points drawn at random with `seed`) or comma-separated point names."""
    finished = [r for r in rows if r["status"] == "finished"]
    names = [r["name"] for r in finished]
    if points == "verdict":
        return verdict_points(finished, study)
    if points == "all":
        return names
    if points.isdigit():
        k = int(points)
        if not 1 <= k <= len(names):
            raise ConfigError(f"--points {points}: the table has {len(names)} finished points; choose 1..{len(names)}")
        return random.Random(seed).sample(names, k)
    chosen = [p.strip() for p in points.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in names]
    if unknown or not chosen:
        raise ConfigError(
            f"--points {points!r}: {unknown or 'nothing'} not among the table's finished points; "
            "give 'verdict', 'all', a number or point names such as " + ", ".join(names[:2])
        )
    return chosen


def verify_study(
    report_dir: str | Path,
    points: str = "verdict",
    tolerance: float = TOLERANCE,
    seed: int = 0,
    workers: int | None = None,
    work: str | Path | None = None,
    quiet: bool = False,
) -> list[Check]:
    """Re-run the chosen points of the study in `report_dir` (in `work`, default a temporary folder removed
    afterwards) and compare them with its results.csv. Returns one Check per point."""
    from unmask.study.local import run_jobs

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise ConfigError(f"{report_dir} is not a folder; give a study's report folder, e.g. docs/study/mini")
    if not (0 <= tolerance < 1):
        raise ConfigError(f"--tolerance {tolerance}: must be in [0, 1) nats")
    stamp = read_stamp(report_dir)
    try:
        study = study_from_dict(stamp["study"], warn_flat=False)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{report_dir / 'stamp.json'}: its study config does not load ({e})") from None
    rows = {r["name"]: r for r in read_table(report_dir / "results.csv", "restore the report folder (git checkout)")}
    names = choose(list(rows.values()), study, points, seed)
    scratch = Path(tempfile.mkdtemp(prefix="unmask-verify-")) if work is None else Path(work)
    try:
        budgets = {rows[n]["unique_tokens"] for n in names}  # only the chosen points' data is prepared
        scaling = sorted(budgets & set(study.scaling.unique_tokens))
        rerun = dataclasses.replace(
            study,
            out=str(scratch),
            unique_tokens=sorted(budgets & set(study.unique_tokens)),
            scaling=ScalingPoints(study.scaling.sizes if scaling else [], scaling),
        )
        prepare_data(rerun)
        grid = jobs(rerun)
        trunks = {j.fork_of for j in grid if j.name in names and j.fork_of}  # a WSD branch needs its trunk run
        todo = [j for j in grid if j.name in names or j.name in trunks]
        run_jobs(todo, workers if workers is not None else study.workers, quiet=quiet)
        checks = [_compare(rows[j.name], row_of(j, rerun), tolerance) for j in todo if j.name in names]
    finally:
        if work is None:  # only the folder made here is removed
            shutil.rmtree(scratch, ignore_errors=True)
    if not quiet:
        print(verify_summary(checks, tolerance, report_dir))
        made_on, here = stamp.get("machine", {}).get("cpu"), cpu_model()
        if made_on != here:
            print(
                f"note: this CPU ({here}) is not the one the study was made on ({made_on or 'not recorded'}): "
                "long runs differ by rounding alone (MDM's 96-epoch mini-study points by up to 0.1 nats)"
            )
    return checks


def _compare(committed: dict[str, Any], got: dict[str, Any], tolerance: float) -> Check:
    loss = got.get("final_val_loss")
    problem = None
    if got.get("status") != "finished":
        problem = "the re-run did not finish"
    elif committed.get("config_hash") and got.get("config_hash") != committed["config_hash"]:
        problem = f"config hash {got['config_hash']} differs from the table's {committed['config_hash']}"
    if loss is None or abs(loss - committed["final_val_loss"]) > tolerance:
        diff = "no result" if loss is None else f"{loss - committed['final_val_loss']:+.4f} nats"
        problem = "; ".join(filter(None, [problem, f"final loss {diff}"]))
    return Check(committed["name"], committed["final_val_loss"], loss, problem)


def verify_summary(checks: list[Check], tolerance: float, report_dir: Path) -> str:
    lines = [f"{report_dir}: {len(checks)} points re-run, tolerance {tolerance:g} nats"]
    for c in checks:
        got = "—" if c.rerun is None else f"{c.rerun:.4f}"
        status = "reproduces" if c.problem is None else f"DOES NOT REPRODUCE: {c.problem}"
        lines.append(f"  {c.name}: committed {c.committed:.4f}, re-run {got}: {status}")
    bad = [c.name for c in checks if c.problem]
    lines.append(f"{len(checks) - len(bad)}/{len(checks)} reproduce" + (f"; differ: {', '.join(bad)}" if bad else ""))
    return "\n".join(lines)
