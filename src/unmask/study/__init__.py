"""Many runs: the multi-run runner (local.py, ray_runner.py), the study grid (grid.py), the results
table (results.py), the scaling-law fit (fit.py), figures and report (report.py), and the `unmask
study` pipeline (pipeline.py).

Exports load on first use, so `unmask.study.fit` imports without torch.
"""

from unmask._lazy import lazy_exports

EXPORTS = {
    "Job": "unmask.study.local",
    "run_jobs": "unmask.study.local",
    "same_run": "unmask.study.local",
    "StudyConfig": "unmask.study.grid",
    "load_study": "unmask.study.grid",
    "fit_law": "unmask.study.fit",
    "run_study": "unmask.study.pipeline",
    "fit_study": "unmask.study.pipeline",
    "report_study": "unmask.study.pipeline",
}
__all__ = sorted(EXPORTS)

__getattr__ = lazy_exports("unmask.study", EXPORTS)
