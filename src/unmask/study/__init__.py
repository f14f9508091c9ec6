"""Many runs: the multi-run runner (local.py); sweeps, the scaling-law fit and reports build on it."""

from unmask.study.local import Job, run_jobs, same_run

__all__ = ["Job", "run_jobs", "same_run"]
