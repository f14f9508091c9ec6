"""Seeds and intervals: a study point's spread over seeds, and comparisons paired by seed.

Two runs that share a seed share their initialisation, data order and noise, so the difference of two
settings is estimated seed by seed (a paired difference) and its 95% interval is Student's t over those
differences. One seed gives a difference but no interval; a claim that needs one says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SETTING = ("objective", "size", "unique_tokens", "epochs", "tuned")
"""A study point without its seed: the runs of one setting are its seeds."""


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float | None
    """Standard error of the mean over seeds (None for one seed)."""
    n: int


@dataclass(frozen=True)
class Paired:
    """The mean over seeds of a − b, with its 95% interval (None with fewer than two shared seeds)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def below_zero(self) -> bool:
        """a < b established: the whole interval lies below zero."""
        return self.high is not None and self.high < 0

    @property
    def above_zero(self) -> bool:
        return self.low is not None and self.low > 0

    def text(self, unit: str = "nats") -> str:
        if self.low is None:
            return f"{self.mean:+.3f} {unit} (one seed: no interval)"
        return f"{self.mean:+.3f} {unit}, 95% CI [{self.low:+.3f}, {self.high:+.3f}] over {self.n} seeds"


def estimate(values: Iterable[float]) -> Estimate:
    xs = list(values)
    if not xs:
        raise ValueError("estimate of no values")
    n, mean = len(xs), math.fsum(xs) / len(xs)
    if n < 2:
        return Estimate(mean, None, 1)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return Estimate(mean, math.sqrt(var / n), n)


def paired(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Paired:
    """a − b over the seeds both have ({seed: value} each), with a Student-t interval at `level`."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("paired difference of settings with no seed in common")
    diff = estimate(a[s] - b[s] for s in seeds)
    if diff.se is None:
        return Paired(diff.mean, None, None, 1)
    half = float(stats.t.ppf(0.5 + level / 2, diff.n - 1)) * diff.se
    return Paired(diff.mean, diff.mean - half, diff.mean + half, diff.n)


def setting_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in SETTING)


def by_setting(rows: list[dict[str, Any]], value: str = "final_val_loss") -> dict[tuple, dict[int, float]]:
    """{setting: {seed: value}} over the finished rows."""
    out: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r.get(value) is not None:
            out.setdefault(setting_key(r), {})[r["seed"]] = r[value]
    return out


def seed_summary(rows: list[dict[str, Any]], value: str = "final_val_loss") -> list[dict[str, Any]]:
    """One row per setting: the first seed's row with `value` replaced by the mean over seeds, plus
    `{value}_se` and `n_seeds`. With one seed per setting the rows are the input rows (se None)."""
    first: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        first.setdefault(setting_key(r), r)
    out = []
    for key, seeds in by_setting(rows, value).items():
        e = estimate(seeds.values())
        out.append({**first[key], value: e.mean, f"{value}_se": e.se, "n_seeds": e.n, "seeds": seeds})
    return out
