"""Run many training runs on one machine: a process pool, one CPU thread per run.

Each job is one run directory with its own schedule. A finished run whose saved config equals
the job's is skipped, an unfinished one is resumed from its checkpoint, and a directory that
holds a run with other settings is refused — or, when the caller owns the folder (the demo),
replaced. Sweeps (local or Ray) put a grid in front of this.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_lib
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from unmask.config import ConfigError, ModelConfig, TrainConfig, to_dict
from unmask.training.rundir import RUNTIME_FIELDS

USER_MODEL_FIELDS = ("n_layer", "d_model", "n_head", "dropout", "init_std", "rope_base")
"""Model fields a job chooses (vocab_size, seq_len and causal come from the data and the objective)."""


@dataclass
class Job:
    name: str
    data: str
    """Prepared data folder."""
    out: str
    """Run directory."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def same_run(job: Job) -> bool | None:
    """True: job.out holds a run (finished or not) with exactly the job's settings; False: other
    settings; None: no run there yet (absent, or an empty folder)."""
    from unmask.run import Run

    out = Path(job.out)
    if not (out / "config.json").is_file():
        return None
    try:
        run = Run(out)
    except ConfigError:
        return False
    saved_model, wanted_model = run.config["model"], to_dict(job.model)
    saved_train, wanted_train = run.config["train"], to_dict(job.train)
    return (
        all(saved_train.get(k) == v for k, v in wanted_train.items() if k not in RUNTIME_FIELDS)
        and all(saved_model.get(k) == wanted_model[k] for k in USER_MODEL_FIELDS)
        and run.data_path == Path(job.data).resolve()
    )


def _run_one(job: Job, queue, replace_stale: bool) -> str:
    from unmask.training import train

    out = Path(job.out)
    same = same_run(job)
    if same is False:
        if not replace_stale:
            raise ConfigError(f"{out} holds a run with other settings; move it away or choose another out folder")
        shutil.rmtree(out)  # a run of this runner's own folder, trained with other settings: never report it

    if same is True and _finished(out):
        queue.put((job.name, None, None))
        return job.name  # nothing left to train: its files stay as they are

    def report(info) -> None:
        if info.step % 10 == 0 or info.step == info.total_steps:  # one message per 10 steps keeps IPC cheap
            queue.put((job.name, info.step, info.total_steps))

    train(job.data, out, job.model, job.train, resume=same is True, quiet=True, hooks=[report])
    queue.put((job.name, None, None))  # finished (or already was)
    return job.name


def run_jobs(jobs: list[Job], workers: int = 0, replace_stale: bool = False, quiet: bool = False) -> list[str]:
    """Train every job (longest first), `workers` at a time (0 = one per CPU core), one thread each.

    Returns the names of the jobs, all finished; a failed job's error is raised after the others end.
    """
    from unmask.progress import make_progress

    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"jobs: names must be unique, got {names}")
    jobs = [Job(j.name, j.data, j.out, j.model, _one_thread(j.train)) for j in jobs]
    jobs.sort(key=lambda j: -j.train.epochs)  # longest first: better packing on few cores
    ctx = mp.get_context("spawn")
    progress = make_progress()
    progress.disable = quiet
    with ctx.Manager() as manager, progress:
        queue = manager.Queue()
        tasks = {j.name: progress.add_task(j.name, total=None, start=False, info="", rate="") for j in jobs}
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=ctx) as pool:
            futures = [pool.submit(_run_one, job, queue, replace_stale) for job in jobs]
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    name, step, total = queue.get(timeout=0.2)
                except queue_lib.Empty:
                    continue
                progress.start_task(tasks[name])  # the clock starts when the run does
                if step is not None:
                    progress.update(tasks[name], completed=step, total=total)
            return [f.result() for f in futures]  # re-raise a worker's error here


def _finished(out: Path) -> bool:
    """The run logged its result at its last step (a kill after that is repaired by a resume)."""
    from unmask.run import Run

    run = Run(out)
    result = run.final_result()
    return (
        result is not None
        and result["step"] == run.budget().get("total_steps")
        and (out / "last.safetensors").is_file()
    )


def _one_thread(cfg: TrainConfig) -> TrainConfig:
    """Parallel runs beat threads within one small run; an explicit thread count is kept."""
    from dataclasses import replace

    return cfg if cfg.threads else replace(cfg, threads=1)
