"""The data-constrained scaling law of Muennighoff et al. (2023), fitted per objective as 2507.15857 does.

    L(N, D, U) = E + A / N'^α + B / D'^β
    D' = U_D + U_D·R_D*·(1 − exp(−R_D / R_D*)),   U_D = min(U, D),          R_D = D / U_D − 1
    N' = U_N + U_N·R_N*·(1 − exp(−R_N / R_N*)),   U_N = min(N, N_opt(U_D)), R_N = N / U_N − 1

N is the parameter count the caller chose (non-embedding or total), D the tokens seen, U the unique tokens.
R_D* (R_N*) is how many repetitions of the data (excess parameters) are worth taking: a repeated token is worth
exp(−R_D / R_D*) of a fresh one. 2507.15857 reports R_D* ≈ 500 for masked diffusion and ≈ 15 for AR.

N_opt(U_D), the compute-optimal parameters for U_D, is the N that minimises the Chinchilla part E + A/N^α + B/D^β
on the iso-compute line C = 6·N·U_D. There αA/N^α = βB/D^β, so with D = U_D

    N_opt(U_D) = (αA / (βB))^(1/α) · U_D^(β/α) = G·(G·U_D)^(β/α),   G = (αA / (βB))^(1/(α+β)),

the form of Muennighoff et al.'s released fit (`D_to_N` in their datablations code).

Fit (`fit_law`), two stages as in the paper: (1) E, A, α, B, β on single-epoch points (D ≤ U, so R_D = 0), taking
N' = N there as the paper does (exact when those runs are not over-parameterised for their data, N ≤ N_opt(D));
(2) R_D*, R_N* on the repeated points (D > U) with stage 1 fixed. Each stage minimises the mean Huber loss
(δ = 1e-3, Chinchilla) of log L_pred − log L_obs with L-BFGS-B, positive quantities in log space (A = e^a, ...).
The starting grid is scored in one vectorised pass and L-BFGS runs from its `n_starts` best points; the best
optimum wins.

Refusals: a parameter the data cannot determine is never printed as a number. It goes to
`FitResult.unidentified` with the reason; `FitError` is raised when nothing at all can be fitted.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq, minimize

PARAMS = ("E", "A", "alpha", "B", "beta", "rd_star", "rn_star")
"""Parameter names, in the order `FitResult.summary` prints them."""
HUBER_DELTA = 1e-3
R_STAR_BOUNDS = (1e-2, 1e6)
"""Search range for R_D*, R_N*; at the upper bound repeated data (excess parameters) lose nothing measurable."""
CHI2_1_95 = 3.84
"""95% quantile of χ² with one degree of freedom."""
EXPONENT_BOUND = 3.0
"""Search bound for α and β; an exponent there marks a term the fit drove to zero."""
VANISHING_NATS = 1e-3
"""A stage-1 term smaller than this at every single-epoch point (or with its exponent at EXPONENT_BOUND) is one the
points do not resolve: the fit set it to zero rather than measured it."""
SATURATED = 0.05
"""exp(−R/R*) below this at every repeated point: each run's repetition is past its decay, so (repeated-runs fit)
D' = U·(1 + R*) at every point and R* is confounded with B."""
NO_SATURATION = "no saturation"
"""How the reason for an R* that the data only bound from below begins."""


class FitError(ValueError):
    """Nothing at all can be fitted from these points; the message says why in one line."""


class Point(NamedTuple):
    """One finished run: its final validation loss. A plain (N, D, U, loss) tuple works too."""

    N: float  # parameters
    D: float  # tokens seen in training
    U: float  # unique tokens available (D / U epochs)
    loss: float


Points = Sequence[Point] | Sequence[tuple[float, float, float, float]] | np.ndarray


class Interval(NamedTuple):
    low: float
    high: float
    n: int  # bootstrap resamples that determined the parameter


class PowerLaw(NamedTuple):
    """C = coefficient · U^k."""

    k: float
    coefficient: float


@dataclass(frozen=True)
class FitResult:
    values: dict[str, float]
    """Identified parameters (names in `PARAMS`)."""
    unidentified: dict[str, str]
    """Parameter → why these points cannot determine it."""
    only_at: dict[str, float] = field(default_factory=dict)
    """A term absorbed into E is valid at one value only: {"N": n} or {"D": d}."""
    notes: tuple[str, ...] = ()
    n_single: int = 0
    """Single-epoch points (D ≤ U) used in stage 1."""
    n_repeated: int = 0
    """Repeated points (D > U) used in stage 2."""
    lower_bounds: dict[str, float] = field(default_factory=dict)
    """R* the data cannot tell from ∞: the smallest value they do not reject at 95% (profile likelihood)."""

    def loss(self, N: ArrayLike, D: ArrayLike, U: ArrayLike) -> np.ndarray | float:
        """Predicted loss; refuses inputs that need an unidentified parameter."""
        for name, value in self.only_at.items():
            given = np.asarray({"N": N, "D": D}[name], float)
            if not np.allclose(given, value, rtol=1e-6):
                term = "A/N^alpha" if name == "N" else "B/D^beta"
                raise ValueError(f"this fit holds only at {name} = {value:.4g}: E absorbed the constant {term}")
        return law_loss(self.values, N, D, U)

    def summary(self) -> str:
        lines = [f"fit of {self.n_single} single-epoch and {self.n_repeated} repeated points"]
        for name in PARAMS:
            if name in self.values:
                lines.append(f"  {name:8s} {self.values[name]:.6g}")
            elif name in self.unidentified:
                lines.append(f"  {name:8s} not identified: {self.unidentified[name]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------- the law


def compute_optimal_n(params: Mapping[str, float], D: ArrayLike) -> np.ndarray | float:
    """N_opt(D) = (αA/(βB))^(1/α) · D^(β/α): the loss-minimising N at compute 6·N·D (see the module docstring)."""
    A, alpha, B, beta = params["A"], params["alpha"], params["B"], params["beta"]
    with np.errstate(divide="ignore", over="ignore"):  # A = 0 (N does not matter): 0; B = 0: ∞ (a bootstrap edge)
        return np.exp((np.log(alpha * A) - np.log(beta * B) + beta * np.log(D)) / alpha)


def _effective(base, R, r_star: float | None, name: str):
    """base·(1 + R*(1 − e^(−R/R*))): `base` fresh units plus R repetitions that decay with constant R*."""
    if r_star is None:
        if np.any(R > 0):
            raise ValueError(f"{name} is needed here (repetition > 0) but was not identified by the fit")
        return base
    return base * (1 + r_star * -np.expm1(-R / r_star))


def law_loss(params: Mapping[str, float], N: ArrayLike, D: ArrayLike, U: ArrayLike) -> np.ndarray | float:
    """L(N, D, U) for parameters named as in `PARAMS` (scalars or broadcastable arrays).

    A missing A/alpha (B/beta) drops the N (D) term, whose constant E then holds. A missing R_D* (R_N*) is
    refused with ValueError wherever that repetition is positive. Without the D term there is no compute-optimal
    rule, so U_N = N."""
    N, D, U = np.broadcast_arrays(*(np.asarray(x, float) for x in (N, D, U)))
    UD = np.minimum(U, D)
    loss = np.full(N.shape, float(params["E"]))
    if "B" in params:
        D_eff = _effective(UD, D / UD - 1, params.get("rd_star"), "rd_star (R_D*)")
        loss = loss + params["B"] / D_eff ** params["beta"]
    if "A" in params:
        UN = np.minimum(N, compute_optimal_n(params, UD)) if "B" in params else N
        N_eff = _effective(UN, np.maximum(N / UN - 1, 0), params.get("rn_star"), "rn_star (R_N*)")
        loss = loss + params["A"] / N_eff ** params["alpha"]
    return loss if loss.ndim else float(loss)


# ---------------------------------------------------------------- fitting


def _as_arrays(points) -> tuple[np.ndarray, ...]:
    try:
        table = np.asarray([tuple(p) for p in points], float).reshape(-1, 4)
    except (TypeError, ValueError) as e:
        raise FitError(f"points must be (N, D, U, loss) records: {e}") from None
    bad = ~np.all(np.isfinite(table) & (table > 0), axis=1)
    if bad.any():
        raise FitError(f"point {int(np.argmax(bad))} = {tuple(table[bad][0])}: N, D, U and loss must be finite and > 0")
    return tuple(table.T)


def _distinct(x: np.ndarray) -> int:
    return len(np.unique(np.round(np.log(x), 9)))


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber(r)/δ and its derivative: quadratic within δ, linear beyond (scaled so slopes are O(1))."""
    a = np.abs(r)
    value = np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)) / delta
    return value, np.clip(r, -delta, delta) / delta


def _logsumexp_fit(terms: list[np.ndarray], dterms: list[np.ndarray], log_obs, delta: float):
    """Objective and gradient for log L = logsumexp(terms); dterms[j] = ∂terms/∂θ, shape (n, k)."""
    stacked = np.stack(terms)  # (n_terms, n)
    log_pred = np.logaddexp.reduce(stacked, axis=0)
    weights = np.exp(stacked - log_pred)  # softmax over terms: ∂ log L / ∂ term
    value, slope = _huber(log_pred - log_obs, delta)
    dlog = sum(w[:, None] * d for w, d in zip(weights, dterms, strict=True))  # (n, k)
    return float(value.mean()), (slope[:, None] * dlog).mean(axis=0), log_pred - log_obs


def _one_blas_thread():
    """BLAS threads only slow L-BFGS-B on 2–7 variables (thread wake-ups dominate, worst on a busy machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _lbfgs(fun, starts: list[np.ndarray], bounds) -> np.ndarray:
    best = None
    with _one_blas_thread():
        for x0 in starts:
            res = minimize(
                fun,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-10},
            )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    if best is None:
        raise FitError("every L-BFGS start diverged")
    return best.x


def _stage1(logN, logD, log_obs, has_N: bool, has_D: bool, delta: float, n_starts: int, init) -> dict[str, float]:
    """E, A, α, B, β on single-epoch points: θ = [log E, (log A, α), (log B, β)]."""
    n = len(log_obs)

    def terms(theta):  # theta (..., k) -> exponents (..., n) and their θ-derivatives
        cols = iter(range(theta.shape[-1]))
        out, d = [theta[..., next(cols), None] + 0 * logN], [np.eye(theta.shape[-1])[[0] * n]]
        for on, logx in ((has_N, logN), (has_D, logD)):
            if on:
                i, j = next(cols), next(cols)
                out.append(theta[..., i, None] - theta[..., j, None] * logx)
                dd = np.zeros((n, theta.shape[-1]))
                dd[:, i], dd[:, j] = 1.0, -logx
                d.append(dd)
        return out, d

    def fun(theta):
        t, d = terms(theta)
        return _logsumexp_fit(t, d, log_obs, delta)[:2]

    # Starting grid: E below the smallest loss, coefficients and exponents over the usual range.
    e0 = np.log(np.exp(log_obs.min()) * np.array([0.05, 0.3, 0.6, 0.9]))
    coef, expo = np.arange(0.0, 21.0, 4.0), np.array([0.1, 0.3, 0.6, 1.0])
    axes = [e0] + [coef, expo] * (int(has_N) + int(has_D))
    grid = np.array(list(itertools.product(*axes)))  # (S, k)
    scores = np.mean(_huber(np.logaddexp.reduce(np.stack(terms(grid)[0]), axis=0) - log_obs, delta)[0], axis=-1)
    names = ["E"] + ["A", "alpha"] * has_N + ["B", "beta"] * has_D
    given = init is not None and all(k in init for k in names)
    starts = [grid[i] for i in np.argsort(scores)[: n_starts if given else max(n_starts, 1)]]
    if given:
        starts.insert(0, np.array([math.log(init[k]) if k in ("E", "A", "B") else init[k] for k in names]))
    bounds = [(None, None)] + [(None, None), (1e-3, EXPONENT_BOUND)] * (int(has_N) + int(has_D))
    theta = _lbfgs(fun, starts, bounds)
    return {k: (math.exp(v) if k in ("E", "A", "B") else float(v)) for k, v in zip(names, theta, strict=True)}


def _saturate(base, R, rho):
    """base·(1 + r(1 − e^(−R/r))) with r = e^ρ, and ∂ log(that) / ∂ρ."""
    r = math.exp(rho)
    x = R / r
    frac = -np.expm1(-x)
    eff = base * (1 + r * frac)
    return eff, base * r * (frac - x * np.exp(-x)) / eff


def _lr_scale(residuals: np.ndarray, delta: float) -> float:
    """E[ψ'] / E[ψ²] for the Huber ψ = clip(r, −δ, δ) under normal residuals with a robust (MAD) scale.

    2·Δ(Σ Huber) times this is the M-estimator analogue of the likelihood-ratio statistic (χ² under the null)."""
    sigma = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    if sigma == 0:
        return math.inf
    c = delta / sigma
    inside = math.erf(c / math.sqrt(2))  # P(|r| < δ) = E[ψ']
    second = sigma**2 * (inside - 2 * c * math.exp(-c * c / 2) / math.sqrt(2 * math.pi)) + delta**2 * (1 - inside)
    return inside / second


def _stage2(base: dict[str, float], N, D, U, log_obs, fit_rn: bool, delta: float, n_starts: int, init):
    """R_D* (and R_N*) on repeated points, stage 1 fixed: θ = [log R_D*, (log R_N*)].

    Returns the estimates and, per estimate, the likelihood-ratio statistic of "no decay" (R* at its upper bound,
    the other constant re-optimised) against the estimate: below χ²₁(95%) = 3.84 the data cannot tell the
    estimate from R* = ∞, so they only bound it from below."""
    UD = np.minimum(U, D)
    RD = D / UD - 1
    has_N = "A" in base
    if has_N:
        UN = np.minimum(N, compute_optimal_n(base, UD))
        RN = np.maximum(N / UN - 1, 0)
    n, k = len(log_obs), 1 + int(fit_rn)

    def model(theta):
        D_eff, dlogD = _saturate(UD, RD, theta[0])
        with np.errstate(divide="ignore"):  # E = 0 (stage 1 found no floor): log 0 = -inf, which logaddexp takes
            log_e = np.log(base["E"])
        t = [np.full(n, log_e), math.log(base["B"]) - base["beta"] * np.log(D_eff)]
        d = [np.zeros((n, k)), np.zeros((n, k))]
        d[1][:, 0] = -base["beta"] * dlogD
        if has_N:
            N_eff, dlogN = _saturate(UN, RN, theta[1]) if fit_rn else (UN, 0 * UN)
            t.append(math.log(base["A"]) - base["alpha"] * np.log(N_eff))
            d.append(np.zeros((n, k)))
            if fit_rn:
                d[2][:, 1] = -base["alpha"] * dlogN
        return _logsumexp_fit(t, d, log_obs, delta)

    fun = lambda theta: model(theta)[:2]
    names = ["rd_star", "rn_star"][:k]
    bounds = [tuple(np.log(R_STAR_BOUNDS))] * k
    grid = np.array(list(itertools.product(*[np.log([0.3, 1, 3, 10, 30, 100, 300, 1000, 3000])] * k)))
    scores = np.array([fun(g)[0] for g in grid])
    given = init is not None and all(name in init for name in names)
    starts = [grid[i] for i in np.argsort(scores)[: n_starts if given else max(n_starts, 1)]]
    if given:
        starts.insert(0, np.log([init[name] for name in names]))
    theta = _lbfgs(fun, starts, bounds)
    best, _, residuals = model(theta)

    scale = _lr_scale(residuals, delta)
    statistic, lower = {}, {}
    for i, name in enumerate(names):
        statistic[name], bound = _no_decay_test(fun, theta, i, bounds, best, n * delta * scale)
        if bound is not None:
            lower[name] = bound
    largest = {"rd_star": float(RD.max()), "rn_star": float(RN.max()) if has_N else 0.0}
    return dict(zip(names, np.exp(theta).tolist(), strict=True)), statistic, largest, lower


def _pinned_fit(fun, theta: np.ndarray, i: int, value: float, bounds) -> float:
    """The objective at θ_i pinned to `value`, every other coordinate re-fitted (L-BFGS from θ)."""
    pinned = theta.copy()
    pinned[i] = value
    free = [j for j in range(len(theta)) if j != i]
    if free:

        def partial(x):
            th = pinned.copy()
            th[free] = x
            value, grad = fun(th)
            return value, grad[free]

        pinned[free] = _lbfgs(partial, [theta[free]], [bounds[j] for j in free])
    return fun(pinned)[0]


def _profile_statistic(fun, theta: np.ndarray, i: int, bounds, best: float, scale: float) -> Callable[[float], float]:
    """log R* → the likelihood-ratio statistic of θ_i pinned there against the estimate (the rest re-fitted);
    `scale` as in `_no_decay_test`."""
    return lambda log_r: 2 * scale * (_pinned_fit(fun, theta, i, log_r, bounds) - best)


def _no_decay_test(fun, theta: np.ndarray, i: int, bounds, best: float, scale: float) -> tuple[float, float | None]:
    """The likelihood-ratio statistic of "no decay" (log R* = θ_i at its upper bound, the rest re-fitted) against
    the estimate, and when it is below χ²₁(95%), the 95% lower bound: the smallest R* the data do not reject (the
    profile falls as R* grows to ∞). `scale` turns a difference of mean Huber losses into the statistic's units
    (n·δ·`_lr_scale`: Σ Huber = n·δ·J)."""
    statistic = _profile_statistic(fun, theta, i, bounds, best, scale)
    at_infinity = statistic(bounds[i][1])
    if at_infinity >= CHI2_1_95:
        return at_infinity, None
    grid = np.linspace(math.log(0.1), bounds[i][1], 64)
    return at_infinity, next((math.exp(g) for g in grid if statistic(g) < CHI2_1_95), math.exp(bounds[i][1]))


def fit_law(
    points: Points, *, delta: float = HUBER_DELTA, n_starts: int = 8, init: Mapping[str, float] | None = None
) -> FitResult:
    """Fit the law to one objective's runs, (N, D, U, loss) records; see the module docstring.

    Identifiability rules (necessary, not sufficient; bootstrap intervals show the rest):
    - N term (A, α): at least two model sizes among single-epoch points; D term (B, β): at least two data sizes.
    - Stage 1: more single-epoch points than free parameters, and n_sizes + n_data_sizes − 1 ≥ free parameters
      (an additive law sees no more than that many independent levels).
    - R_D*: the D term, and more repeated points than stage-2 parameters. R_N*: the N term and repeated points
      where N/U_N takes at least two values, one of them above 1 (an over-parameterised run).
    - An R* the data cannot tell from ∞ (no decay) is only a lower bound: its likelihood-ratio statistic against
      R* at the upper search bound (the M-estimator analogue for the Huber loss) must reach χ²₁(95%) = 3.84.
    `init` (parameter values, e.g. a previous fit) is tried first; `n_starts` best grid points follow (at least
    one where `init` lacks a stage's parameters)."""
    N, D, U, L = _as_arrays(points)
    if len(L) < 3:
        raise FitError(f"need at least 3 points to fit anything, got {len(L)}")
    single = D <= U * (1 + 1e-9)
    n1, n_rep = int(single.sum()), int((~single).sum())
    if n1 == 0:
        raise FitError("no single-epoch points (D ≤ U): stage 1 (E, A, alpha, B, beta) has nothing to fit")
    sizes, data_sizes = _distinct(N[single]), _distinct(D[single])
    has_N, has_D = sizes >= 2, data_sizes >= 2
    unidentified: dict[str, str] = {}
    lower_bounds: dict[str, float] = {}
    only_at: dict[str, float] = {}
    notes: list[str] = []
    if not has_N:
        why = f"one model size (N = {N[single][0]:.4g}) among single-epoch points: A/N^alpha is a constant"
        unidentified |= {"A": why, "alpha": why}
        only_at["N"] = float(N[single][0])
        notes.append("E includes the constant A/N^alpha of the single model size")
    if not has_D:
        why = f"one data size (D = {D[single][0]:.4g}) among single-epoch points: B/D^beta is a constant"
        unidentified |= {"B": why, "beta": why}
        only_at["D"] = float(D[single][0])
        notes.append("E includes the constant B/D^beta of the single data size")
    if not (has_N or has_D):
        raise FitError(f"all {n1} single-epoch points share one N and one D: neither term of the law can be fitted")
    k1 = 1 + 2 * (int(has_N) + int(has_D))
    if n1 <= k1 or sizes + data_sizes - 1 < k1:
        raise FitError(
            f"only {n1} single-epoch points (D ≤ U) over {sizes} model sizes and {data_sizes} data sizes "
            f"for {k1} free parameters: need more than {k1} points and sizes + data sizes − 1 ≥ {k1}"
        )

    values = _stage1(np.log(N[single]), np.log(D[single]), np.log(L[single]), has_N, has_D, delta, n_starts, init)
    vanished = _vanished_terms(values, N[single], D[single])
    for coef, expo in vanished:
        del values[coef], values[expo]
        unidentified |= dict.fromkeys((coef, expo), vanished[coef, expo])
    n_term, d_term = has_N and "A" in values, has_D and "B" in values

    # Stage 2: which repetition constants the repeated points can see.
    rep = ~single
    if not has_N and np.any(rep & ~np.isclose(N, only_at["N"], rtol=1e-6)):
        rep &= np.isclose(N, only_at["N"], rtol=1e-6)
        notes.append(f"repeated points at other model sizes than N = {only_at['N']:.4g} are left out")
    n_rep = int(rep.sum())
    if not d_term:
        why = "B and beta are not identified, so repeated data (D > U) cannot be modelled"
        unidentified |= {"rd_star": why, "rn_star": why}
    elif n_rep == 0:
        why = "no repeated points (every run has D ≤ U, one epoch or less)"
        unidentified |= {"rd_star": why, "rn_star": why}
    elif n_term and not np.all(compute_optimal_n(values, np.minimum(U[rep], D[rep])) > 0):
        raise FitError(  # e.g. a bootstrap resample with alpha at its lower bound: (αA/βB)^(1/α) is 0 in floats
            f"stage 1's compute-optimal size underflows to 0 (alpha = {values['alpha']:.3g}): no repeated run can be "
            "modelled"
        )
    else:
        fit_rn = n_term
        if not has_N:
            unidentified["rn_star"] = "one model size: there is no N term whose excess parameters could decay"
        elif not n_term:
            unidentified["rn_star"] = "the N term vanished at the fit: there are no excess parameters to decay"
        else:
            with np.errstate(divide="ignore"):
                ratio = N[rep] / np.minimum(N[rep], compute_optimal_n(values, U[rep]))
            if not np.any(ratio > 1 + 1e-9):
                fit_rn = False
                unidentified["rn_star"] = (
                    "no repeated run has more parameters than compute-optimal for its unique "
                    "data (N ≤ U_N everywhere), so R_N never enters"
                )
            elif _distinct(ratio) < 2:
                fit_rn = False
                unidentified["rn_star"] = (
                    f"N/U_N takes one value ({ratio[0]:.3g}) among repeated points, which "
                    "cannot separate R_N* from the other constants"
                )
        if fit_rn and n_rep <= 2:
            fit_rn = False
            unidentified["rn_star"] = f"only {n_rep} repeated points for 2 stage-2 parameters"
        if n_rep <= 1:
            unidentified["rd_star"] = f"only {n_rep} repeated point for 1 stage-2 parameter"
        else:
            args = (values, N[rep], D[rep], U[rep], np.log(L[rep]), fit_rn, delta, n_starts, init)
            stars, statistic, largest, lower = _stage2(*args)
            for name, r_star in stars.items():
                if statistic[name] < CHI2_1_95:
                    lower_bounds[name] = lower[name]
                    unidentified[name] = (
                        f"{NO_SATURATION}: {name} = ∞ (no decay) fits as well as the estimate {r_star:.3g} "
                        f"(likelihood-ratio statistic {statistic[name]:.2g} < {CHI2_1_95}; largest repetition seen "
                        f"{largest[name]:.3g}), so the data give only a lower bound: {name} ≥ {lower[name]:.3g} (95%)"
                    )
                else:
                    values[name] = r_star
    return FitResult(values, unidentified, only_at, tuple(notes), n1, n_rep, lower_bounds)


def fit_repeated(
    points: Points, *, delta: float = HUBER_DELTA, n_starts: int = 8, init: Mapping[str, float] | None = None
) -> FitResult:
    """REPEATED-RUNS fit, a labelled variant: E, B, β and R_D* together on the repeated points (D > U) alone, of
    one model size (the N term is a constant in E); single-epoch points are left out. θ = [log E, log B, β,
    log R_D*].

    Why: the two-stage fit learns the fresh-data curve B/D^β from single-epoch runs and reads repetition off it.
    A masked diffusion model at small scale sits on the unigram plateau for its first few hundred steps, so its
    single-epoch losses barely move with D, stage 1 fits β ≈ 0, and repetition becomes invisible (R_D* only a
    lower bound, whatever the repeated runs show). The repeated runs carry the information themselves: runs that
    saw the same D from fewer unique tokens U end higher by what repetition costs. What differs from the paper's
    estimate: E, B, β here describe runs that have left the plateau, not fresh-data scaling, so R_D* is read
    off the repeated runs' own curve; it is comparable between objectives only when both are fitted this way.

    Identified when the points span at least 2 budgets U and 2 repetition counts, number more than 4 distinct
    (U, D), the D term does not vanish, and no decay (R_D* = ∞) is rejected at 95% (otherwise a lower bound,
    as in `fit_law`)."""
    N, D, U, L = _as_arrays(points)
    rep = D > U * (1 + 1e-9)
    N, D, U, L = N[rep], D[rep], U[rep], L[rep]
    if _distinct(N) > 1:
        raise FitError(f"the repeated points span {_distinct(N)} model sizes; this fit takes one (the N term is E's)")
    R = D / U - 1
    distinct_points = len({(round(u), round(d)) for u, d in zip(U, D, strict=True)})
    if _distinct(U) < 2 or _distinct(R) < 2 or distinct_points <= 4:
        raise FitError(
            f"{distinct_points} distinct repeated points over {_distinct(U)} budgets U and {_distinct(R)} repetition "
            "counts: need more than 4 points, 2 budgets and 2 repetition counts to fit E, B, beta and R_D* together"
        )
    log_obs, n = np.log(L), len(L)

    def model(theta):  # θ = [log E, log B, β, log R_D*]
        D_eff, dlogD = _saturate(U, R, theta[3])
        log_d = np.log(D_eff)
        d0, d1 = np.zeros((n, 4)), np.zeros((n, 4))
        d0[:, 0] = 1.0
        d1[:, 1], d1[:, 2], d1[:, 3] = 1.0, -log_d, -theta[2] * dlogD
        return _logsumexp_fit([np.full(n, theta[0]), theta[1] - theta[2] * log_d], [d0, d1], log_obs, delta)

    fun = lambda theta: model(theta)[:2]
    bounds = [(None, None), (None, None), (1e-3, EXPONENT_BOUND), tuple(np.log(R_STAR_BOUNDS))]
    names = ["E", "B", "beta", "rd_star"]
    e0 = np.log(L.min() * np.array([0.05, 0.3, 0.6, 0.9]))  # the starting grid of stage 1 and stage 2 together
    axes = [e0, np.arange(0.0, 21.0, 4.0), np.array([0.1, 0.3, 0.6, 1.0]), np.log([1, 3, 10, 30, 100, 300, 1000])]
    grid = np.array(list(itertools.product(*axes)))
    scores = np.array([fun(g)[0] for g in grid])
    given = init is not None and all(k in init for k in names)
    starts = [grid[i] for i in np.argsort(scores)[: n_starts if given else max(n_starts, 1)]]
    if given:
        starts.insert(0, np.array([math.log(max(init["E"], 1e-300)), math.log(init["B"]), init["beta"],
                                   math.log(init["rd_star"])]))  # fmt: skip
    theta = _lbfgs(fun, starts, bounds)
    best, _, residuals = model(theta)
    E = math.exp(theta[0])
    values = {"E": E if E >= VANISHING_NATS else 0.0, "B": math.exp(theta[1]), "beta": float(theta[2])}  # no floor
    why_n = "a repeated-runs fit of one model size: A/N^alpha is a constant inside E"
    unidentified = {"A": why_n, "alpha": why_n, "rn_star": why_n}
    notes = ("REPEATED-RUNS fit: E, B, beta and R_D* fitted together on the repeated runs alone",)
    vanished = _vanished_terms(values, N, D)
    if vanished:
        why = vanished["B", "beta"]
        return FitResult({"E": values["E"]}, unidentified | {"B": why, "beta": why, "rd_star": why},
                         {"N": float(N[0])}, notes, 0, n)  # fmt: skip
    scale = n * delta * _lr_scale(residuals, delta)
    lower_bounds, r_star = {}, math.exp(theta[3])
    if math.exp(-R.min() / r_star) < SATURATED:  # every point past its decay: D' = U(1 + R_D*), B's twin
        statistic = _profile_statistic(fun, theta, 3, bounds, best, scale)
        grid = np.linspace(math.log(R.max()), bounds[3][0], 64)
        upper = next(math.exp(g) for g in grid if statistic(g) < CHI2_1_95)
        unidentified["rd_star"] = (
            f"saturated at every point: the estimate {r_star:.3g} is far below the smallest repetition seen "
            f"({R.min():.3g}), so the decay is over at every run and R_D* trades off against B; the data give only "
            f"an upper bound: rd_star ≤ {upper:.3g} (95%)"
        )
        return FitResult(values, unidentified, {"N": float(N[0])}, notes, 0, n)
    at_infinity, lower = _no_decay_test(fun, theta, 3, bounds, best, scale)
    if lower is None:
        values["rd_star"] = r_star
    else:
        lower_bounds["rd_star"] = lower
        unidentified["rd_star"] = (
            f"{NO_SATURATION}: rd_star = ∞ (no decay) fits as well as the estimate {r_star:.3g} (likelihood-ratio "
            f"statistic {at_infinity:.2g} < {CHI2_1_95}; largest repetition seen {R.max():.3g}), so the data give only "
            f"a lower bound: rd_star ≥ {lower:.3g} (95%)"
        )
    return FitResult(values, unidentified, {"N": float(N[0])}, notes, 0, n, lower_bounds)


def _vanished_terms(values: dict[str, float], N: np.ndarray, D: np.ndarray) -> dict[tuple[str, str], str]:
    """The stage-1 terms (A, alpha) / (B, beta) the fit drove to zero, each with why it is not identified."""
    out = {}
    for coef, expo, x, what in (("A", "alpha", N, "model size"), ("B", "beta", D, "data size")):
        if coef not in values:
            continue
        largest = float(np.max(values[coef] * x ** -values[expo]))
        if largest < VANISHING_NATS or values[expo] >= EXPONENT_BOUND * (1 - 1e-6):
            out[coef, expo] = (
                f"the {what} term vanished at the fit ({coef}/x^{expo} ≤ {largest:.2g} nats at every single-epoch "
                f"point, {expo} = {values[expo]:.3g}): the single-epoch runs do not resolve a {what} dependence"
            )
    return out


# ---------------------------------------------------------------- uncertainty


def bootstrap_draws(
    points: Points,
    n_boot: int = 200,
    seed: int = 0,
    *,
    point: FitResult | None = None,
    delta: float = HUBER_DELTA,
    fitter: Callable[..., FitResult] | None = None,
) -> dict[str, list[float]]:
    """Every resample's estimate of each parameter the full-data fit identifies (see `bootstrap`); `fitter` is
    `fit_law` (the default) or `fit_repeated`."""
    fitter = fitter or fit_law
    N, D, U, L = table = _as_arrays(points)
    point = point or fitter(points, delta=delta)
    rng = np.random.default_rng(seed)
    single = D <= U * (1 + 1e-9)
    strata = [np.flatnonzero(single), np.flatnonzero(~single)]
    draws: dict[str, list[float]] = {k: [] for k in point.values}
    rows = np.stack(table, axis=1)
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata if len(s)])
        try:
            refit = fitter(rows[idx], delta=delta, n_starts=0, init=point.values)
        except FitError:
            continue
        for k in draws:
            if k in refit.values:
                draws[k].append(refit.values[k])
            elif refit.unidentified.get(k, "").startswith(NO_SATURATION):
                draws[k].append(math.inf)
    return draws


def percentile_interval(draws: Sequence[float], level: float = 0.95) -> Interval | None:
    """The percentile interval of bootstrap draws (order statistics, inverted CDF); None from fewer than 2."""
    draws = [d for d in draws if not math.isnan(d)]
    if len(draws) < 2:
        return None
    tail = 100 * (1 - level) / 2
    cut = lambda q: float(np.percentile(draws, q, method="inverted_cdf"))
    return Interval(cut(tail), cut(100 - tail), len(draws))


def bootstrap(
    points: Points,
    n_boot: int = 200,
    seed: int = 0,
    *,
    level: float = 0.95,
    point: FitResult | None = None,
    delta: float = HUBER_DELTA,
    fitter: Callable[..., FitResult] | None = None,
) -> dict[str, Interval]:
    """Percentile intervals for every parameter the full-data fit identifies.

    Resampling is stratified by stage: single-epoch and repeated points are each resampled with replacement
    within their own group, so every resample keeps the design's stage sizes. Each refit starts from the
    full-data estimate (one L-BFGS start per stage). A resample in which an R* shows no saturation counts as
    R* = ∞ (the interval then reaches ∞); one that cannot determine a parameter for another reason is skipped for
    that parameter (`Interval.n` counts the resamples used). Percentiles are order statistics (inverted CDF)."""
    draws = bootstrap_draws(points, n_boot, seed, point=point, delta=delta, fitter=fitter)
    intervals = {k: percentile_interval(v, level) for k, v in draws.items()}
    return {k: v for k, v in intervals.items() if v is not None}


# ---------------------------------------------------------------- critical compute


@dataclass(frozen=True)
class Crossing:
    compute: float | None
    """C = 6·N·D where MDM's fitted loss first falls below AR's; None when it does not in the searched range."""
    reason: str = ""
    """Why `compute` is None."""
    loss: float | None = None
    n_ar: float | None = None
    n_mdm: float | None = None


def _loss_fn(fit: FitResult | Mapping[str, float]) -> Callable:
    return fit.loss if isinstance(fit, FitResult) else (lambda N, D, U: law_loss(fit, N, D, U))


def critical_compute(
    fit_ar: FitResult | Mapping[str, float],
    fit_mdm: FitResult | Mapping[str, float],
    U: float,
    N: float | Callable[[float], float] | Literal["optimal"],
    *,
    c_range: tuple[float, float] | None = None,
    n_grid: int = 400,
    n_range: tuple[float, float] = (1e5, 1e12),
) -> Crossing:
    """The smallest compute C = 6·N·D at which the MDM law's loss falls below the AR law's, for U unique tokens.

    Along which path: `N` a number fixes the model size (D = C / 6N; the default range is 0.01–10⁴ epochs);
    `N` a function gives the size for each compute, N(C); "optimal" lets each objective take its own
    loss-minimising N at each compute (a log grid of 241 sizes over `n_range`), the compute-optimal comparison.
    C is scanned on a log grid of `n_grid` points over `c_range` (required unless N is a number), then the
    first sign change of L_MDM − L_AR is refined with Brent's method."""
    if c_range is None:
        if not isinstance(N, (int, float)):
            raise ValueError("c_range is required when N is a rule or 'optimal'")
        c_range = (6 * N * U * 1e-2, 6 * N * U * 1e4)
    loss_ar, loss_mdm = _loss_fn(fit_ar), _loss_fn(fit_mdm)
    sizes = np.geomspace(*n_range, 241)

    def at(C: np.ndarray):  # -> (L_ar, L_mdm, N_ar, N_mdm), each like C
        if N == "optimal":
            out = []
            for f in (loss_ar, loss_mdm):
                grid = f(sizes[None, :], C[:, None] / (6 * sizes[None, :]), U)  # (len(C), n sizes)
                best = grid.argmin(axis=1)
                out.append((grid[np.arange(len(C)), best], sizes[best]))
            return out[0][0], out[1][0], out[0][1], out[1][1]
        n = np.array([N(c) for c in C]) if callable(N) else np.full_like(C, float(N))
        return loss_ar(n, C / (6 * n), U), loss_mdm(n, C / (6 * n), U), n, n

    Cs = np.geomspace(*c_range, n_grid)
    try:
        l_ar, l_mdm, _, _ = at(Cs)
    except ValueError as e:
        return Crossing(None, f"the laws cannot be evaluated on this path: {e}")
    below = l_mdm < l_ar
    if below[0]:
        return Crossing(
            None, f"MDM is already below AR at the smallest compute searched (C = {Cs[0]:.3g}); lower c_range"
        )
    if not below.any():
        return Crossing(None, f"MDM stays above AR for C in [{Cs[0]:.3g}, {Cs[-1]:.3g}]: the curves do not cross there")
    i = int(np.argmax(below))

    def gap(log_c: float) -> float:  # L_MDM − L_AR at compute e^log_c
        l_ar_c, l_mdm_c, _, _ = at(np.array([math.exp(log_c)]))
        return float(l_mdm_c[0] - l_ar_c[0])

    C = math.exp(brentq(gap, math.log(Cs[i - 1]), math.log(Cs[i]), xtol=1e-12, rtol=1e-12))
    l_ar_c, _, n_ar, n_mdm = (float(x[0]) for x in at(np.array([C])))
    return Crossing(C, loss=l_ar_c, n_ar=n_ar, n_mdm=n_mdm)


def critical_compute_power_law(Us: Sequence[float], Cs: Sequence[float | None]) -> PowerLaw:
    """Least-squares fit of log C_crit = log coefficient + k·log U (2507.15857 fits C_crit ∝ U^k)."""
    if len(Us) != len(Cs):
        raise FitError(f"{len(Us)} unique budgets but {len(Cs)} critical computes")
    missing = [i for i, c in enumerate(Cs) if c is None or not c > 0]
    if missing:
        raise FitError(f"critical compute {missing[0]} is missing or not positive: drop budgets without a crossing")
    U, C = np.asarray(Us, float), np.asarray(Cs, float)
    if _distinct(U) < 2:
        raise FitError(f"need at least 2 distinct unique budgets U to fit C_crit ∝ U^k, got {_distinct(U)}")
    k, log_coef = np.polyfit(np.log(U), np.log(C), 1)
    return PowerLaw(float(k), math.exp(log_coef))
