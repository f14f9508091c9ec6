"""The files of a study folder read back strictly, and damage found between invocations.

    OUT/failures.json     {point name: its error}: the points `study run` skips until --retry true
    OUT/results.csv       the table `study run` wrote (+ results.parquet): what each run held then
    OUT/fit.json          what `study fit` wrote, read by `study report`
    OUT/runs/NAME/        each point's run directory (unmask.run)
    OUT/data/U*/          each budget's prepared data

A file that does not read back is one ConfigError naming it and the fix. `study run` sets a damaged run
or data folder aside (OUT/damaged/, nothing is deleted) and trains or prepares it again; `fit` and
`report` refuse a folder whose runs no longer hold what results.csv recorded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from unmask.checkpoint import Checkpoints, warn
from unmask.config import ConfigError
from unmask.run import Run, read_json
from unmask.study.grid import StudyConfig, data_dir, jobs, prepared_config
from unmask.study.results import read_table, row_of

FAILURES = "failures.json"
FIT = "fit.json"
TABLE = "results.csv"


def read_failures(study: StudyConfig) -> dict[str, str]:
    """OUT/failures.json ({} when there is none)."""
    path = Path(study.out) / FAILURES
    if not path.exists():
        return {}
    fix = "restore it, or delete it to train every failed point again"
    failures = read_json(path, f"the points `unmask study run` recorded as failed; {fix}")
    if not (isinstance(failures, dict) and all(isinstance(e, str) for e in failures.values())):
        raise ConfigError(f"{path} is damaged (expected {{point name: error message}}); {fix}")
    return failures


def read_fit(study: StudyConfig, config: str | Path) -> dict[str, Any]:
    """OUT/fit.json, checked to hold what `study fit` writes for this study."""
    path = Path(study.out) / FIT
    fix = f"run `unmask study fit {config}` again"
    fitted = read_json(path, f"the fit `unmask study fit` writes; {fix}")
    problem = _mismatch(fitted, FIT_SCHEMA, "fit.json") or _fit_sense(fitted)
    if problem is None and fitted["study"] != study.name:
        problem = f"it is the fit of study {fitted['study']!r}, not {study.name!r}"
    if problem:
        raise ConfigError(f"{path} is damaged ({problem}); {fix}")
    return fitted


NUMBER = "number"
"""A finite or non-finite JSON number (fit.json writes NaN where a value is undefined), never a bool."""
U_KEY = "U"
"""Mapping keys that are unique-token budgets: digit strings."""
OPTIONAL = object()


def _opt(schema: Any) -> tuple:
    return (OPTIONAL, schema)


FIT_ENTRY = {
    "points": int,
    "values": {str: NUMBER},
    "intervals_95": {str: [NUMBER, NUMBER]},
    "unidentified": {str: str},
    "only_at": _opt({str: NUMBER}),
    "notes": [str],
}
FIT_SCHEMA = {
    "study": str,
    "N": str,
    "protocols": {
        str: {
            "points": int,
            "loss": _opt(str),
            "objectives": {str: ({"error": str, "points": int}, FIT_ENTRY)},
            "critical_compute": ({}, {
                "per_U": {U_KEY: {"compute": (NUMBER, None), "reason": (str, None), "loss": _opt((NUMBER, None)),
                                  "epochs": _opt((NUMBER, None))}},
                "power_law": ({"k": NUMBER, "coefficient": NUMBER}, {"error": str}),
            }),
            "observed": {
                U_KEY: {"ar_best": NUMBER, "ar_best_epochs": int, "mdm_best": NUMBER, "mdm_best_epochs": int,
                        "seeds": int, "mdm_minus_ar": {"mean": NUMBER, "low": (NUMBER, None),
                                                       "high": (NUMBER, None), "n": int},
                        "mdm_beats_ar_from_epochs": (int, None), "mdm_beats_ar_from_flops": (NUMBER, None),
                        "mdm_below_ar_in_the_mean_from_epochs": (int, None)}
            },
        }
    },
}  # fmt: skip
"""What fit_study writes. A dict is a record whose keys must all be there (but those marked _opt; {} only an empty
one), {str: X} / {U_KEY: X} a mapping of any (digit) keys to X; [X] a list of X, [X, Y] exactly two; a tuple is
alternatives; NUMBER a JSON number."""


def _mismatch(value: Any, schema: Any, where: str) -> str | None:
    """None when `value` fits `schema` (FIT_SCHEMA's notation), else where and how it does not."""
    if isinstance(schema, tuple) and schema and schema[0] is OPTIONAL:
        return _mismatch(value, schema[1], where)
    if isinstance(schema, tuple):
        misses = [_mismatch(value, s, where) for s in schema]
        return None if None in misses else misses[-1]
    if schema is None:
        return None if value is None else f"{where} must be null"
    if schema is NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{where} must be a number"
    if schema in (int, str):
        ok = isinstance(value, schema) and not isinstance(value, bool)
        return None if ok else f"{where} must be {'an integer' if schema is int else 'text'}"
    if isinstance(schema, list):
        if not isinstance(value, list) or (len(schema) > 1 and len(value) != len(schema)):
            return f"{where} must be a list" + (f" of {len(schema)}" if len(schema) > 1 else "")
        items = schema if len(schema) > 1 else schema * len(value)
        pairs = enumerate(zip(value, items, strict=True))
        return next((m for i, (v, s) in pairs if (m := _mismatch(v, s, f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{where} must be an object"
    if list(schema) in ([str], [U_KEY]):  # a mapping of any keys
        if U_KEY in schema and not all(k.isdigit() for k in value):
            return f"{where} must be keyed by unique-token counts"
        sub = next(iter(schema.values()))
        return next((m for k, v in value.items() if (m := _mismatch(v, sub, f"{where}.{k}"))), None)
    if not schema and value:
        return f"{where} must be empty"
    for key, sub in schema.items():
        if key not in value:
            if isinstance(sub, tuple) and sub and sub[0] is OPTIONAL:
                continue
            return f"{where} lacks {key!r}"
        if miss := _mismatch(value[key], sub, f"{where}.{key}"):
            return miss
    return None


def _fit_sense(fitted: dict) -> str | None:
    """What the schema cannot say: a fit's parameters come in the law's pairs around E, a crossover's epochs and
    FLOPs together."""
    from unmask.study.fit import PARAMS
    from unmask.study.pipeline import PROTOCOLS

    missing = [p for p in PROTOCOLS if p not in fitted["protocols"]]
    if missing:
        return f"fit.json.protocols lacks {', '.join(missing)}"
    for protocol, entry in fitted["protocols"].items():
        for objective, fit in entry["objectives"].items():
            if "error" in fit:
                continue
            values, where = fit["values"], f"fit.json.protocols.{protocol}.objectives.{objective}"
            if not ("E" in values and set(values) <= set(PARAMS) and set(fit.get("only_at", {})) <= {"N", "D"}):
                return f"{where}: values must hold E and only {', '.join(PARAMS)}; only_at only N or D"
            if ("A" in values) != ("alpha" in values) or ("B" in values) != ("beta" in values):
                return f"{where}: A comes with alpha, B with beta"
        if protocol not in PROTOCOLS:
            return f"fit.json.protocols.{protocol}: not a protocol; choose from {', '.join(PROTOCOLS)}"
        if entry.get("loss", "final_val_loss") not in ("final_val_loss", "best_val_loss"):
            return f"fit.json.protocols.{protocol}.loss must be final_val_loss or best_val_loss"
        for U, o in entry["observed"].items():
            where = f"fit.json.protocols.{protocol}.observed.{U}"
            if (o["mdm_beats_ar_from_epochs"] is None) != (o["mdm_beats_ar_from_flops"] is None):
                return f"{where}: the crossover's epochs and FLOPs go together"
            diff = o["mdm_minus_ar"]
            if (diff["low"] is None) != (diff["high"] is None) or (diff["low"] is not None and diff["n"] < 2):
                return f"{where}.mdm_minus_ar: an interval has both ends and needs two seeds or more"
            if diff["n"] < 1 or o["seeds"] < 1:
                return f"{where}: seeds and mdm_minus_ar.n must be >= 1"
    return None


def study_rows(study: StudyConfig, config: str | Path) -> list[dict[str, Any]]:
    """Every point's row, read from its run now and checked against what `study run` recorded in results.csv:
    a run deleted, emptied or changed since, a table cut short or damaged, is one ConfigError naming it."""
    rerun = f"`unmask study run {config}` sets damaged runs aside and trains them again"
    try:
        rows = [row_of(job, study) for job in jobs(study)]
    except ConfigError as e:
        raise ConfigError(f"{e}; {rerun}") from None
    table = Path(study.out) / TABLE
    if not table.exists() and all(r["status"] == "missing" for r in rows):
        raise ConfigError(f"study {study.name}: no finished run under {study.out}; run `unmask study run` first")
    fix = f"run `unmask study run {config}` to write it again"
    recorded = {r["name"]: r for r in read_table(table, fix)}
    _check_parquet(table.with_suffix(".parquet"), recorded, fix)
    for row in rows:
        was = recorded.get(row["name"])
        if was is None:
            if row["status"] != "missing":
                raise ConfigError(f"{table} lacks point {row['name']} (cut short or overwritten); {fix}")
        elif was["status"] == "finished" and (
            row["status"] != "finished" or row["final_val_loss"] != was["final_val_loss"]
        ):
            now = {"missing": "is gone", "unfinished": "holds no final result"}.get(row["status"], "changed")
            raise ConfigError(f"run {row['run']} {now} since results.csv recorded it finished (final loss "
                              f"{was['final_val_loss']:.4f}): it was deleted or damaged; {rerun}")  # fmt: skip
    diverged = sorted(r["name"] for r in rows if r["status"] == "diverged")
    if diverged:
        warn(f"{len(diverged)} run(s) ended on a non-finite loss (diverged) and are left out: {', '.join(diverged)}")
    return rows


def _check_parquet(path: Path, recorded: dict[str, dict], fix: str) -> None:
    """results.parquet, when there is one and pyarrow to read it, must hold the CSV's points and results."""
    if not path.exists():
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return
    try:
        rows = pq.read_table(path).to_pylist()
        same = {r["name"]: (r["status"], r["final_val_loss"]) for r in rows}
    except Exception as e:  # pyarrow's own error types: any of them means the file does not read back
        raise ConfigError(f"{path} is damaged ({type(e).__name__}); {fix}") from None
    if same != {n: (r["status"], r["final_val_loss"]) for n, r in recorded.items()}:
        raise ConfigError(f"{path} disagrees with results.csv (one of them was changed or cut short); {fix}")


def run_damage(path: Path, job, study: StudyConfig) -> str | None:
    """Why the run folder of a point cannot be read, skipped or resumed as it is (None: it can)."""
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a run directory"
    if not any(p.name != ".lock" for p in path.iterdir()):
        return None  # not started
    if not (path / "config.json").is_file():
        return f"{path / 'config.json'} is missing"
    try:
        row = row_of(job, study)
        if row["status"] == "unfinished" and Checkpoints(path).latest() is None and Run(path).metrics():
            return f"{path} is unfinished and has no checkpoint to resume from"
    except ConfigError as e:
        return str(e)
    return None


def data_damage(study: StudyConfig, U: int) -> str | None:
    """Why a budget's prepared data folder cannot be used as it is (None: it can, or it is prepared anew)."""
    import dataclasses

    from unmask.config import to_dict
    from unmask.data.dataset import TokenData

    target = data_dir(study, U)
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target} is a file, not a data folder"
    recorded = prepared_config(target)
    if recorded is None and any(target.iterdir()):
        return f"{target / 'manifest.json'} is missing or damaged"
    if recorded != to_dict(dataclasses.replace(study.data, unique_tokens=U)):
        return None  # another config: prepare_data prepares it again in place
    try:
        TokenData(target).verify()
    except ConfigError as e:
        return str(e)
    return None


def set_aside_damaged(study: StudyConfig) -> list[Path]:
    """Move every damaged data folder and run of the grid to OUT/damaged/ (nothing is deleted) so that `study
    run` prepares or trains it again; returns where they went."""
    moved = []
    for U in study.budgets():
        damage = data_damage(study, U)
        if damage:
            moved.append(set_aside(data_dir(study, U), study, damage))
    for job in jobs(study):
        path = Path(job.out)
        damage = run_damage(path, job, study)
        if damage:
            moved.append(set_aside(path, study, damage))
    return moved


def set_aside(path: Path, study: StudyConfig, why: str) -> Path:
    """Move `path` under OUT/damaged/ with a warning naming why; returns its new place."""
    base = Path(study.out) / "damaged" / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = base, 0
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}.{n}")
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    warn(f"{why}: moved {path} to {target}; it is made again")
    return target
