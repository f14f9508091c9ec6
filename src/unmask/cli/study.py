"""`unmask study run|fit|report|verify`: the data-constrained study."""

from __future__ import annotations

from typing import Literal


def study(
    action: Literal["run", "fit", "report", "verify"],
    study_config: str,
    retry: bool = False,
    workers: int | None = None,
    n_boot: int = 200,
    points: str = "verdict",
    tolerance: float = 5e-3,
    seed: int = 0,
    work: str | None = None,
) -> object:
    """The data-constrained study: a grid of runs (local processes or Ray), the scaling-law fit, the report.

    `unmask study run CONFIG` trains every point (resumable: finished points are skipped, unfinished ones
    resumed), `unmask study fit CONFIG` fits the data-constrained law per objective (R_D*, C_crit(U)) with
    bootstrap intervals, `unmask study report CONFIG` writes figures, a Markdown + HTML report, the results
    table and a stamp (commit, command, config hash, machine) into OUT/report/. `unmask study verify REPORT_DIR`
    re-runs points of a committed report from its stamp and table, prints which reproduce, and exits 1 if any
    does not.

    Args:
        action: 'run', 'fit', 'report' or 'verify'.
        study_config: Study YAML (see configs/studies/); for verify, a report folder (e.g. docs/study/mini).
        retry: run: also retry the points that failed before (they are skipped otherwise).
        workers: run, verify: parallel runs on the local runner (default: the config's; 0 = one per CPU core).
        n_boot: fit: bootstrap resamples for the 95% intervals (0 = none).
        points: verify: 'verdict' (the runs the report's verdicts rest on), 'all', a number K (K points drawn
            at random with --seed) or comma-separated point names.
        tolerance: verify: a re-run's final loss within this many nats of the table's reproduces it (the
            same machine type and torch build give 0; another CPU's rounding can differ slightly).
        seed: verify: seed of the random choice of --points K.
        work: verify: folder for the re-runs (kept); default a temporary folder removed afterwards.
    """
    from unmask.study.pipeline import fit_study, report_study, run_study

    if action == "run":
        return run_study(config=study_config, retry=retry, workers=workers)
    if action == "fit":
        return fit_study(config=study_config, n_boot=n_boot)
    if action == "verify":
        from unmask.study.verify import StudyNotReproduced, verify_study

        checks = verify_study(
            report_dir=study_config, points=points, tolerance=tolerance, seed=seed, workers=workers, work=work
        )
        if any(c.problem for c in checks):
            raise StudyNotReproduced(f"{sum(bool(c.problem) for c in checks)} of {len(checks)} points do not reproduce")
        return checks
    return str(report_study(config=study_config))
