"""The data-constrained scaling-law fit: it recovers a known law, says what it cannot determine, and finds crossings.

Synthetic runs come from the law itself (Chinchilla's E, A, alpha, B, beta) with 1% lognormal noise, in two designs
that mirror the paper's:
- a single-epoch scan (9 sizes × 12 tokens-per-parameter ratios, D = U), keeping the runs with N ≤ N_opt(D),
  where stage 1's N' = N is exact;
- a repetition scan: 5 sizes × 5 unique budgets × epochs 2, 4, ..., 4096. R_D = epochs − 1 reaches 4095, eight
  times R_D* = 500, so the MDM-like law is seen well into its saturation (and the AR-like R_D* = 15 from its
  onset); small models on large budgets have R_N = 0 and pin R_D* alone, large models on small budgets
  (N/U_N up to ~100) show R_N*.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from unmask.study.fit import (
    FitError,
    Point,
    bootstrap,
    compute_optimal_n,
    critical_compute,
    critical_compute_power_law,
    fit_law,
    fit_repeated,
    law_loss,
)

BASE = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}  # Chinchilla's fit
AR_LIKE = {**BASE, "rd_star": 15.0, "rn_star": 5.0}
MDM_LIKE = {**BASE, "rd_star": 500.0, "rn_star": 5.0}
EPOCHS = 2.0 ** np.arange(1, 13)  # 2 .. 4096


SIZES, BUDGETS, SINGLE_SIZES = np.geomspace(1e6, 1e8, 5), np.geomspace(1e7, 1e9, 5), np.geomspace(1e6, 1e8, 9)


def chinchilla(N, D):
    return BASE["E"] + BASE["A"] / N ** BASE["alpha"] + BASE["B"] / D ** BASE["beta"]


def runs(
    truth, seed: int = 0, noise: float = 0.01, sizes=SIZES, budgets=BUDGETS, epochs=EPOCHS, single_sizes=SINGLE_SIZES
) -> list[Point]:
    grid = [
        (n, r * n, r * n)
        for n in single_sizes
        for r in np.geomspace(10, 3000, 12)
        if n <= compute_optimal_n(truth, r * n)
    ]
    grid += [(n, e * u, u) for u in budgets for n in sizes for e in epochs]
    N, D, U = np.array(grid).T
    loss = law_loss(truth, N, D, U) * np.exp(noise * np.random.default_rng(seed).standard_normal(len(N)))
    return [Point(*row) for row in zip(N, D, U, loss, strict=True)]


@pytest.fixture(scope="module", params=["ar", "mdm"])
def case(request):
    truth = {"ar": AR_LIKE, "mdm": MDM_LIKE}[request.param]
    points = runs(truth)
    return truth, points, fit_law(points)


# ---------------------------------------------------------------- recovery


def test_law_is_chinchilla_without_repetition():
    N, D = 1e7, 6e8
    assert N <= compute_optimal_n(BASE, D / 2)  # compute-optimal or smaller: U_N = N, R_N = 0
    assert law_loss(AR_LIKE, N, D, D) == pytest.approx(chinchilla(N, D), rel=1e-12)
    assert law_loss(AR_LIKE, N, D / 2, D) == pytest.approx(chinchilla(N, D / 2), rel=1e-12)  # half an epoch
    assert law_loss(AR_LIKE, 1e9, D, D) > chinchilla(1e9, D)  # over-parameterised: excess parameters decay


def test_compute_optimal_n_minimises_loss_at_fixed_compute():
    D = 1e9
    n_opt = compute_optimal_n(BASE, D)
    C = 6 * n_opt * D
    sizes = n_opt * np.geomspace(0.5, 2, 201)
    assert sizes[np.argmin(chinchilla(sizes, C / (6 * sizes)))] == pytest.approx(n_opt, rel=0.01)


def test_compute_optimal_n_at_a_vanishing_term_is_zero_or_unbounded_not_an_error():
    # a bootstrap resample can fit A = 0 (size does not matter) or B = 0 (data does not): once a math domain error
    assert compute_optimal_n({**BASE, "A": 0.0}, 1e9) == 0.0
    assert compute_optimal_n({**BASE, "B": 0.0}, 1e9) == np.inf


def test_repeated_data_is_worth_less_and_saturates():
    N, U = 1e6, 1e9  # R_N = 0
    epochs = np.array([1, 2, 10, 100, 1e4])
    loss = law_loss(AR_LIKE, N, epochs * U, U)
    assert np.all(np.diff(loss) < 0)
    assert loss[-1] == pytest.approx(law_loss(AR_LIKE, N, 16 * U, 16 * U), rel=1e-6)  # D' → U·(1 + R_D*)


def test_recovers_the_generating_law(case):
    truth, _, fit = case
    assert fit.unidentified == {}
    assert fit.values["rd_star"] == pytest.approx(truth["rd_star"], rel=0.15)
    assert abs(fit.values["alpha"] - truth["alpha"]) < 0.05
    assert abs(fit.values["beta"] - truth["beta"]) < 0.05
    assert fit.values["E"] == pytest.approx(truth["E"], rel=0.05)
    assert fit.values["rn_star"] == pytest.approx(truth["rn_star"], rel=0.5)  # weakly determined: report it


def test_fit_tells_mdm_like_from_ar_like():
    ar, mdm = fit_law(runs(AR_LIKE, seed=1)), fit_law(runs(MDM_LIKE, seed=1))
    assert mdm.values["rd_star"] > 10 * ar.values["rd_star"]


def test_bootstrap_intervals_contain_the_truth(case):
    truth, points, fit = case
    intervals = bootstrap(points, n_boot=24, seed=0, point=fit)
    assert set(intervals) == set(fit.values)
    for name, (low, high, n) in intervals.items():
        assert n == 24 and math.isfinite(low) and math.isfinite(high), name
        assert low <= fit.values[name] <= high, name
        assert low <= truth[name] <= high, (name, low, high, truth[name])


def test_bootstrap_is_deterministic_for_a_seed():
    points = runs(AR_LIKE, sizes=np.geomspace(1e6, 1e8, 3), budgets=[1e7, 1e8], epochs=EPOCHS[::2])
    fit = fit_law(points)
    assert bootstrap(points, n_boot=4, seed=3, point=fit) == bootstrap(points, n_boot=4, seed=3, point=fit)


# ---------------------------------------------------------------- refusals


def test_too_few_points_is_a_fit_error():
    with pytest.raises(FitError, match="at least 3 points"):
        fit_law([(1e7, 1e8, 1e8, 3.0), (2e7, 1e8, 1e8, 2.9)])
    corners = [(n, d, d, chinchilla(n, d)) for n in (1e6, 1e7) for d in (1e8, 1e9)]
    with pytest.raises(FitError, match="4 single-epoch points .* 5 free parameters"):
        fit_law(corners + [(1e7, 4e9, 1e9, 2.5)])
    with pytest.raises(FitError, match="no single-epoch points"):
        fit_law([(1e7, 4 * u, u, 3.0) for u in (1e7, 1e8, 1e9)])
    with pytest.raises(FitError, match="finite and > 0"):
        fit_law([(1e7, 1e8, 1e8, float("nan"))] * 3)


def test_single_model_size_leaves_the_n_term_unidentified():
    N = 3e5  # below N_opt(U) for every budget: R_N = 0, the D term and R_D* still fit
    points = runs(AR_LIKE, sizes=[N], single_sizes=[], epochs=np.concatenate([[1.0], EPOCHS]))
    fit = fit_law(points)
    assert set(fit.unidentified) == {"A", "alpha", "rn_star"}
    assert "one model size" in fit.unidentified["A"] and "one model size" in fit.unidentified["rn_star"]
    assert "A" not in fit.values and "rn_star" not in fit.values
    assert fit.values["rd_star"] == pytest.approx(15.0, rel=0.15)
    assert fit.values["E"] == pytest.approx(BASE["E"] + BASE["A"] / N ** BASE["alpha"], rel=0.05)  # E absorbed it
    assert fit.loss(N, 1e8, 1e8) == pytest.approx(law_loss(AR_LIKE, N, 1e8, 1e8), rel=0.02)
    with pytest.raises(ValueError, match="only at N"):
        fit.loss(1e8, 1e8, 1e8)
    assert "not identified: one model size" in fit.summary()


def test_no_repeated_points_leaves_the_repetition_constants_unidentified():
    points = [p for p in runs(AR_LIKE) if p.D <= p.U]
    fit = fit_law(points)
    assert set(fit.unidentified) == {"rd_star", "rn_star"}
    assert "no repeated points" in fit.unidentified["rd_star"]
    assert abs(fit.values["beta"] - BASE["beta"]) < 0.05
    with pytest.raises(ValueError, match="rd_star"):
        fit.loss(1e6, 4e9, 1e9)  # a repeated run needs R_D*, which the data never showed


def test_no_over_parameterised_repeats_leaves_rn_star_unidentified():
    points = runs(AR_LIKE, sizes=[1e6, 3e6], budgets=[1e9, 3e9])  # N ≤ N_opt(U): R_N = 0 everywhere
    fit = fit_law(points)
    assert set(fit.unidentified) == {"rn_star"}
    assert "N ≤ U_N everywhere" in fit.unidentified["rn_star"]


def test_no_saturation_gives_no_number_for_rd_star():
    no_decay = {**BASE, "rd_star": 1e7, "rn_star": 5.0}  # repeated tokens as good as new
    fit = fit_law(runs(no_decay, epochs=[2.0, 3.0, 4.0]))  # R_D ≤ 3
    assert "rd_star" not in fit.values
    assert "lower bound" in fit.unidentified["rd_star"]
    # ...but the profile likelihood bounds it from below: values the data reject are excluded.
    bound = fit.lower_bounds["rd_star"]
    assert f"rd_star ≥ {bound:.3g} (95%)" in fit.unidentified["rd_star"]
    assert bound > 1.0
    strong = fit_law(runs({**BASE, "rd_star": 1e7, "rn_star": 5.0}, epochs=[2.0, 4.0, 8.0, 16.0]))  # R_D ≤ 15
    assert strong.lower_bounds["rd_star"] > bound  # more repetition seen, a higher bound


# ---------------------------------------------------------------- the repeated-runs fit

STUDY_BUDGETS = [6250.0, 12500.0, 25000.0, 50000.0]


def study_runs(truth, epochs, seeds=3, noise=0.005, N=3e5) -> list[Point]:
    """A study's grid at one model size: every budget × epoch count × seed, from a law without an N term."""
    rng = np.random.default_rng(0)
    grid = [(N, e * u, u) for u in STUDY_BUDGETS for e in epochs for _ in range(seeds)]
    N_, D, U = np.array(grid).T
    loss = law_loss(truth, N_, D, U) * np.exp(noise * rng.standard_normal(len(D)))
    return [Point(*row) for row in zip(N_, D, U, loss, strict=True)]


@pytest.mark.parametrize(
    ("rd_star", "epochs"), [(5.0, [2, 4, 8, 16, 32]), (40.0, [8, 24, 96, 192, 384])], ids=["ar-like", "mdm-like"]
)
def test_the_repeated_runs_fit_recovers_rd_star_with_an_interval_that_covers_it(rd_star, epochs):
    truth = {"E": 1.5, "B": 50.0, "beta": 0.18, "rd_star": rd_star}
    points = study_runs(truth, epochs)
    fit = fit_repeated(points)
    assert fit.n_single == 0 and fit.n_repeated == len(points)
    assert fit.values["rd_star"] == pytest.approx(rd_star, rel=0.3)
    assert "REPEATED-RUNS" in fit.notes[0] and "A" in fit.unidentified and fit.only_at == {"N": 3e5}
    low, high, n = bootstrap(points, n_boot=16, point=fit, fitter=fit_repeated)["rd_star"]
    assert n == 16 and low <= rd_star <= high


def test_single_epoch_runs_on_a_plateau_hide_repetition_from_the_two_stage_fit_not_from_the_repeated_runs_fit():
    truth = {"E": 1.5, "B": 50.0, "beta": 0.18, "rd_star": 40.0}
    repeated = study_runs(truth, [8, 24, 96, 192, 384])
    plateau = [Point(3e5, u, u, 5.9 - 0.01 * i) for i, u in enumerate(np.geomspace(6250, 8e5, 8))]  # MDM's first steps
    two_stage = fit_law(plateau + repeated)
    assert "rd_star" not in two_stage.values  # stage 1's flat curve leaves repetition nothing to explain
    assert fit_repeated(plateau + repeated).values["rd_star"] == pytest.approx(40.0, rel=0.3)  # single epochs left out


def test_runs_all_past_their_decay_bound_rd_star_from_above_only():
    truth = {"E": 1.5, "B": 50.0, "beta": 0.18, "rd_star": 2.0}
    fit = fit_repeated(study_runs(truth, [96, 192]))  # exp(-95/2): every run saturated, R_D* is B's twin
    assert "rd_star" not in fit.values
    why = fit.unidentified["rd_star"]
    assert why.startswith("saturated at every point") and "upper bound" in why
    upper = float(why.rsplit("rd_star ≤ ", 1)[1].split(" ")[0])
    assert 2.0 <= upper < 95


def test_the_repeated_runs_fit_refuses_designs_that_cannot_determine_it():
    truth = {"E": 1.5, "B": 50.0, "beta": 0.18, "rd_star": 40.0}
    one_budget = [p for p in study_runs(truth, [8, 24, 96]) if p.U == 6250.0]
    with pytest.raises(FitError, match="2 budgets"):
        fit_repeated(one_budget)
    two_sizes = study_runs(truth, [8, 24, 96]) + study_runs(truth, [8, 24, 96], N=1e6)
    with pytest.raises(FitError, match="model sizes"):
        fit_repeated(two_sizes)
    with pytest.raises(FitError, match="repetition counts"):
        fit_repeated([Point(3e5, 1, 1, 5.0)] * 5)  # single-epoch points only


# ---------------------------------------------------------------- critical compute


def crossing_pair(N_at, C_star: float, U: float):
    """An AR law and an MDM law (larger E, larger R_D*) built to have equal loss at compute C_star on N_at(C)."""
    N = N_at(C_star)
    D = C_star / (6 * N)
    gap = law_loss(AR_LIKE, N, D, U) - law_loss(MDM_LIKE, N, D, U)
    return AR_LIKE, {**MDM_LIKE, "E": MDM_LIKE["E"] + gap}


@pytest.mark.parametrize("rule", ["fixed", "rule"])
def test_critical_compute_finds_the_constructed_crossing(rule):
    U, C_star = 1e8, 6 * 3e7 * 64e8  # 64 epochs of U with N = 3e7
    N = 3e7 if rule == "fixed" else (lambda C: 3e7 * (C / C_star) ** 0.5)
    ar, mdm = crossing_pair(N if callable(N) else (lambda C: N), C_star, U)
    assert mdm["E"] > ar["E"]  # MDM starts worse
    out = critical_compute(ar, mdm, U, N, c_range=(6 * 3e7 * U, 6 * 3e7 * U * 1e4))
    assert out.compute == pytest.approx(C_star, rel=1e-3)
    assert out.reason == ""


def test_critical_compute_with_compute_optimal_sizes():
    U = 1e8
    ar, mdm = crossing_pair(lambda C: 3e7, 6 * 3e7 * 64e8, U)
    out = critical_compute(ar, mdm, U, "optimal", c_range=(1e15, 1e22))
    assert out.compute is not None
    sizes = np.geomspace(1e5, 1e12, 4001)
    best = [law_loss(p, sizes, out.compute / (6 * sizes), U).min() for p in (ar, mdm)]
    assert best[0] == pytest.approx(best[1], rel=1e-3)  # equal compute-optimal losses at C_crit
    assert out.n_ar is not None and out.n_mdm is not None


def test_critical_compute_refuses_when_curves_do_not_cross():
    worse = {**MDM_LIKE, "E": MDM_LIKE["E"] + 1.0}
    out = critical_compute(AR_LIKE, worse, 1e8, 3e7)
    assert out.compute is None and "do not cross" in out.reason
    better = {**MDM_LIKE, "E": MDM_LIKE["E"] - 0.5}
    out = critical_compute(AR_LIKE, better, 1e8, 3e7)
    assert out.compute is None and "already below" in out.reason
    with pytest.raises(ValueError, match="c_range"):
        critical_compute(AR_LIKE, worse, 1e8, "optimal")


def test_critical_compute_power_law_recovers_k():
    Us = np.array([25e6, 50e6, 100e6, 200e6, 400e6])
    noise = np.exp(0.02 * np.random.default_rng(0).standard_normal(len(Us)))
    k, coefficient = critical_compute_power_law(Us, 2.12e15 * Us**2.174 * noise)
    assert k == pytest.approx(2.174, abs=0.05)
    assert coefficient * 1e8**k == pytest.approx(2.12e15 * 1e8**2.174, rel=0.05)
    with pytest.raises(FitError, match="2 distinct"):
        critical_compute_power_law([1e8, 1e8], [1e20, 2e20])
    with pytest.raises(FitError, match="missing"):
        critical_compute_power_law([1e8, 2e8], [1e20, None])


def test_a_size_term_the_fit_drives_to_zero_is_named_not_reported():
    # At one epoch the larger model is no better (the long study's demo4x against demo: within noise, often a
    # little worse): the size term can only go to zero, A/N^alpha at a bound. It is named as unidentified, not
    # reported as A = 0; the data term and R_D* are still fitted.
    truth = {"E": 1.69, "B": 410.7, "beta": 0.28, "rd_star": 15.0}
    grid = [(n, d, d) for n in (3e5, 1.2e6) for d in np.geomspace(1e4, 1e6, 8)]
    grid += [(3e5, e * u, u) for u in (1e4, 3e4, 1e5) for e in (2, 4, 8, 16, 32, 64)]
    N, D, U = np.array(grid).T
    worse = np.where((N > 1e6) & (D <= U), 1.01, 1.0)  # the larger model, 1% worse at every single-epoch point
    loss = law_loss(truth, N, D, U) * worse * np.exp(0.002 * np.random.default_rng(0).standard_normal(len(N)))
    fit = fit_law([Point(*row) for row in zip(N, D, U, loss, strict=True)])
    assert {"A", "alpha"} <= set(fit.unidentified) and "A" not in fit.values
    assert "model size term vanished" in fit.unidentified["A"] and "vanished" in fit.unidentified["rn_star"]
    assert fit.values["beta"] == pytest.approx(0.28, rel=0.2) and fit.values["rd_star"] == pytest.approx(15, rel=0.3)


def test_stage_two_takes_a_first_stage_without_a_floor():
    # Stage 1 can put E at 0 (the long study's single-epoch runs show no floor): log E is -inf there, not an error.
    from unmask.study.fit import HUBER_DELTA, _stage2

    truth = {"E": 0.0, "B": 30.0, "beta": 0.15, "rd_star": 15.0}
    U = np.repeat([1e4, 3e4, 1e5], 6)
    D = U * np.tile([2, 4, 8, 16, 32, 64], 3)
    N = np.full_like(U, 3e5)
    stars, *_ = _stage2(truth, N, D, U, np.log(law_loss(truth, N, D, U)), False, HUBER_DELTA, 4, None)
    assert stars["rd_star"] == pytest.approx(15.0, rel=1e-3)


def test_a_first_stage_whose_optimal_size_underflows_is_a_fit_error_not_a_warning(monkeypatch):
    import warnings

    import unmask.study.fit as fit_module

    flat_n_term = {"E": 1.0, "A": 5.0, "alpha": 1e-3, "B": 400.0, "beta": 0.3}  # (αA/βB)^(1/α) = 0 in floats
    monkeypatch.setattr(fit_module, "_stage1", lambda *args, **kwargs: dict(flat_n_term))
    points = runs(AR_LIKE, sizes=np.geomspace(1e6, 1e8, 3), budgets=[1e7, 1e8], epochs=EPOCHS[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero on the way
        with pytest.raises(FitError, match="underflows to 0"):
            fit_law(points)
