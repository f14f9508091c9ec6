"""Run a study's jobs as Ray tasks: one task per run with its CPU/GPU request, on a laptop or a cluster.

`pip install 'unmask[ray]'`. Without an address, Ray starts a local instance; with one (e.g. "auto" on
a cluster node) the tasks spread over the cluster. Each task is the local runner's `_run_one`, so
same-run detection, resume and refusal of stale runs behave exactly as with local processes.
"""

from __future__ import annotations

from unmask.config import ConfigError
from unmask.study.local import Job, _run_one, collect, prepare_jobs


def run_jobs_ray(
    jobs: list[Job],
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    address: str | None = None,
    replace_stale: bool = False,
    quiet: bool = False,
    raise_errors: bool = True,
) -> dict[str, str | None]:
    """Train every job as a Ray task; returns {name: None or the error's message} like `run_jobs`."""
    try:
        import ray
    except ImportError:
        raise ConfigError("runner ray needs Ray: pip install 'unmask[ray]' (or use runner: local)") from None
    from unmask.progress import progress_bar

    jobs = prepare_jobs(jobs)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_run_one)
        refs = {task.remote(job, None, replace_stale): job.name for job in jobs}
        pending = list(refs)
        with progress_bar(f"{len(jobs)} runs on Ray", total=len(jobs), disable=quiet) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                bar.advance(len(ready))
        return collect(refs.items(), raise_errors, ray.get)
    finally:
        if started_here:
            ray.shutdown()
