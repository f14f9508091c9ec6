"""Seeds and intervals: replicas differ only by seed, a paired 95% interval covers a known difference at its
nominal rate, and the report states a crossover only where that interval lies below zero."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from unmask.config import to_dict
from unmask.study.grid import StudyConfig, jobs
from unmask.study.pipeline import _crossover_text, _outside_the_law, observed_crossover, protocol_rows
from unmask.study.stats import estimate, paired, seed_summary


def test_seeded_replicas_differ_only_by_seed():
    study = StudyConfig(unique_tokens=[1000], epochs={"ar": [2], "mdm": [2]}, seeds=[0, 1, 2])
    by_point: dict[tuple, list] = {}
    for job in jobs(study):
        by_point.setdefault((job.train.objective, job.train.epochs), []).append(job)
    for replicas in by_point.values():
        assert [j.train.seed for j in replicas] == [0, 1, 2]
        assert len({j.out for j in replicas}) == 3 and all(j.name.endswith(f"-s{j.train.seed}") for j in replicas)
        unseeded = [to_dict(dataclasses.replace(j.train, seed=0)) for j in replicas]
        assert all(u == unseeded[0] for u in unseeded) and len({to_dict(j.model).__repr__() for j in replicas}) == 1
        assert len({j.data for j in replicas}) == 1  # the same unique tokens: the seed is the run's only change


def test_the_paired_interval_covers_a_known_difference_at_the_nominal_rate():
    """5 seeds, a shared per-seed effect much larger than the noise: 2,000 synthetic studies."""
    rng = np.random.default_rng(0)
    true_diff, covered, widths = -0.05, 0, []
    for _ in range(2000):
        seed_effect = rng.normal(0, 0.2, 5)
        a = {s: 5.0 + true_diff + seed_effect[s] + rng.normal(0, 0.03) for s in range(5)}
        b = {s: 5.0 + seed_effect[s] + rng.normal(0, 0.03) for s in range(5)}
        d = paired(a, b)
        covered += d.low <= true_diff <= d.high
        widths.append(d.high - d.low)
    assert 0.935 <= covered / 2000 <= 0.965  # nominal 0.95; binomial s.e. 0.005
    unpaired_half_width = 2.776 * np.sqrt(2 * (0.2**2 + 0.03**2) / 5)  # what ignoring the pairing would give
    assert np.median(widths) / 2 < unpaired_half_width / 4


def test_one_seed_gives_a_difference_but_no_interval():
    d = paired({0: 5.5}, {0: 5.6})
    assert d.mean == pytest.approx(-0.1) and d.low is None and not d.below_zero
    assert "one seed: no interval" in d.text()
    e = estimate([1.0, 2.0, 3.0])
    assert (e.mean, e.n) == (2.0, 3) and e.se == pytest.approx(1 / np.sqrt(3))


def rows_of(losses: dict[tuple[str, int], list[float]], U: int = 1000, lr: float = 0.002) -> list[dict]:
    return [
        {"objective": o, "size": "demo", "unique_tokens": U, "epochs": e, "seed": s, "tuned": json.dumps({"lr": lr}),
         "final_val_loss": loss, "flops": 1e12 * e, "name": f"{o}-E{e}-s{s}"}
        for (o, e), per_seed in losses.items() for s, loss in enumerate(per_seed)
    ]  # fmt: skip


def test_a_crossover_is_stated_only_where_its_interval_excludes_zero():
    clear = rows_of({("ar", 16): [5.60, 5.70, 5.50], ("mdm", 96): [5.50, 5.61, 5.41]})  # 0.09-0.10 below each seed
    o = observed_crossover(clear)["1000"]
    assert o["mdm_beats_ar_from_epochs"] == 96 and o["mdm_minus_ar"]["high"] < 0
    assert _crossover_text(o).startswith("crossover: from 96 epochs")

    noisy = rows_of({("ar", 16): [5.60, 5.70, 5.50], ("mdm", 96): [5.40, 5.80, 5.45]})  # below in the mean only
    o = observed_crossover(noisy)["1000"]
    assert o["mdm_beats_ar_from_epochs"] is None and o["mdm_below_ar_in_the_mean_from_epochs"] == 96
    assert "the 95% interval does not exclude zero" in _crossover_text(o)

    one_seed = rows_of({("ar", 16): [5.557], ("mdm", 96): [5.540]})  # the old mini-study's "crossover"
    o = observed_crossover(one_seed)["1000"]
    assert o["mdm_beats_ar_from_epochs"] is None and "one seed gives no interval" in _crossover_text(o)


def test_the_table_and_the_trend_findings_use_means_over_seeds_with_intervals():
    rows = rows_of({("ar", 8): [4.0, 4.1, 4.2], ("ar", 32): [4.5, 4.7, 4.6], ("mdm", 48): [5.0, 5.1, 5.2],
                    ("mdm", 96): [4.8, 4.85, 4.9]})  # fmt: skip
    summary = {(s["objective"], s["epochs"]): s for s in seed_summary(rows)}
    assert summary[("ar", 32)]["final_val_loss"] == pytest.approx(4.6) and summary[("ar", 32)]["n_seeds"] == 3
    lines = " ".join(_outside_the_law(rows, {1000: 6.0}))
    assert "AR's final loss rises with repetition (U = 1,000: 4.100 at 8 epochs to 4.600 at 32" in lines
    assert (
        "95% CI [" in lines and "MDM is still improving at its longest runs (U = 1,000: 48 → 96 epochs -0.250" in lines
    )


def test_own_best_chooses_a_setting_by_its_mean_over_seeds_and_keeps_all_its_seeds():
    study = StudyConfig(tune={"lr": [0.002, 0.004]})
    low = rows_of({("ar", 8): [4.0, 4.6]}, lr=0.002)  # mean 4.3, its seed 0 the single best run
    high = rows_of({("ar", 8): [4.1, 4.3]}, lr=0.004)  # mean 4.2
    chosen = protocol_rows(low + high, study, "own_best")
    assert {json.loads(r["tuned"])["lr"] for r in chosen} == {0.004} and len(chosen) == 2


def test_an_objectives_own_tuning_axes_multiply_its_runs_only(tmp_path):
    from unmask.study.grid import load_study

    path = tmp_path / "s.yaml"
    path.write_text(
        "objectives: [ar, mdm]\nunique_tokens: [1000]\nepochs: {ar: [8], mdm: [16]}\ntune: {lr: [0.002, 0.004]}\n"
        "tune_objective: {ar: {weight_decay: [0.1, 3.0], ar_input_noise: [0.0, 0.1]},\n"
        "                 mdm: {mdm_t_beta: [[], [2, 2]]}}\n"
    )
    study = load_study(path)
    names = [j.name for j in jobs(study)]
    assert sum(n.startswith("ar-") for n in names) == 2 * 2 * 2 and sum(n.startswith("mdm-") for n in names) == 2 * 2
    assert "ar-demo-U1000-E8-s0-ar_input_noise0.1-lr0.004-weight_decay3" in names
    assert "mdm-demo-U1000-E16-s0-mdm_t_beta2x2" in names and "ar-demo-U1000-E8-s0" in names
    assert study.shared("ar") == {"ar_input_noise": 0.0, "lr": 0.002, "weight_decay": 0.1}
    assert study.shared("mdm") == {"lr": 0.002, "mdm_t_beta": []} and study.tuned()


@pytest.mark.parametrize(
    "bad, words",
    [("{orderings: {lr: [1]}}", "not among the objectives"), ("{ar: {nope: [1]}}", "cannot be tuned"),
     ("{ar: {lr: [0.1]}}", "tuned for every objective already")],
)  # fmt: skip
def test_bad_objective_tuning_axes_are_refused(tmp_path, bad, words):
    from unmask.config import ConfigError
    from unmask.study.grid import load_study

    path = tmp_path / "s.yaml"
    path.write_text(f"objectives: [ar, mdm]\ntune: {{lr: [0.002]}}\ntune_objective: {bad}\n")
    with pytest.raises(ConfigError, match=words):
        load_study(path)
