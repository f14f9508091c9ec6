"""Run many training runs on one machine: a process pool, one CPU thread per run.

Each job is one run directory with its own schedule. A finished run whose saved config equals
the job's is skipped, an unfinished one is resumed from its checkpoint, and a directory that
holds a run with other settings is refused — or, when the caller owns the folder (the demo),
replaced. Sweeps (local or Ray) put a grid in front of this.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue as queue_lib
import shutil
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from unmask.config import USER_MODEL_FIELDS, ConfigError, ModelConfig, TrainConfig, to_dict
from unmask.training.rundir import RUNTIME_FIELDS


@dataclass
class Job:
    name: str
    data: str
    """Prepared data folder."""
    out: str
    """Run directory."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fork_of: str | None = None
    """A WSD decay branch: the name of the job (the longer run) it is forked from; both run in one worker."""


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
    # the saved configs read back through their dataclasses: a field added since the run has its default
    saved_model, wanted_model = to_dict(run.model_config), to_dict(job.model)
    saved_train, wanted_train = run.train_config.flat(), job.train.flat()
    return (
        all(saved_train.get(k) == v for k, v in wanted_train.items() if k not in RUNTIME_FIELDS)
        and all(saved_model.get(k) == wanted_model[k] for k in USER_MODEL_FIELDS)
        and run.data_path == Path(job.data).resolve()
    )


def _run_one(job: Job, queue, replace_stale: bool, parent: int | None = None) -> str:
    """Train `job` (resumed, or skipped when finished). In a pool worker `parent` is the study's PID: once that
    process is gone (killed), the run stops at the next step with a checkpoint, as on SIGTERM, instead of
    training on unseen and holding its run's lock against the next `study run`."""
    from unmask.training import TrainingStopped, train

    out = Path(job.out)
    same = same_run(job)
    if same is False:
        if not replace_stale:
            raise ConfigError(f"{out} holds a run with other settings; move it away or choose another out folder")
        shutil.rmtree(out)  # a run of this runner's own folder, trained with other settings: never report it

    if same is True and _finished(out):
        return job.name  # nothing left to train: its files stay as they are

    def orphaned() -> bool:
        return parent is not None and os.getppid() != parent

    def report(info) -> None:
        if orphaned():
            os.kill(os.getpid(), signal.SIGTERM)  # training's own handler: a checkpoint, then a clean stop
        if queue is not None and (info.step % 10 == 0 or info.step == info.total_steps):  # cheap IPC
            queue.put((job.name, info.step, info.total_steps))

    try:
        train(job.data, out, job.model, job.train, resume=same is True, quiet=True, hooks=[report])
    except TrainingStopped:
        if orphaned():
            os._exit(1)  # orphaned, its checkpoint saved: no one to report to, and no next job to start
        raise
    return job.name


def _run_chain(trunk: Job, branches: list[Job], queue, replace_stale: bool, parent: int | None = None) -> str:
    """A WSD trunk and its decay branches, shortest first: the trunk trains to each branch's decay start, the
    branch is forked from it (unmask.training.fork) and trained, then the trunk goes on. Resumable: finished
    branches are skipped, a forked one is resumed. A branch added to a grid whose trunk is already past its decay
    start (an epoch count added to a finished study) trains as its own WSD run, which is bitwise the branch."""
    from dataclasses import replace

    from unmask.checkpoint import Checkpoints
    from unmask.data.dataset import TokenData
    from unmask.training import Budget
    from unmask.training.fork import fork_run
    from unmask.training.optim import decay_start

    for branch in sorted(branches, key=lambda j: j.train.epochs):
        if same_run(branch) is None:
            step = decay_start(Budget.of(TokenData(trunk.data), branch.train), branch.train.optim)
            latest = Checkpoints(trunk.out).latest() if same_run(trunk) else None
            if latest is not None and (latest["step"] > step or _finished(Path(trunk.out))):  # its fork point is gone
                _run_one(branch, queue, replace_stale, parent)
                continue
            _run_one(replace(trunk, train=trunk.train.with_flat(stop_at_step=step)), queue, replace_stale, parent)
            shutil.rmtree(branch.out, ignore_errors=True)  # an empty folder of ours (same_run: no run there)
            fork_run(trunk.out, branch.out, branch.train.epochs)
        _run_one(branch, queue, replace_stale, parent)
    return _run_one(trunk, queue, replace_stale, parent)


def run_jobs(
    jobs: list[Job], workers: int = 0, replace_stale: bool = False, quiet: bool = False, raise_errors: bool = True
) -> dict[str, str | None]:
    """Train every job (longest first), `workers` at a time (0 = one per CPU core), one thread each.

    Shows a bar per run and one for the whole set (its ETA from the steps of every run). Returns
    {name: None if finished, else the error's one-line message}; with raise_errors the first
    error is raised instead, after the other jobs end.
    """
    from unmask.progress import make_progress

    jobs = prepare_jobs(jobs)
    branches: dict[str, list[Job]] = {}
    for j in jobs:
        if j.fork_of:
            branches.setdefault(j.fork_of, []).append(j)
    roots = [j for j in jobs if not j.fork_of]
    orphans = sorted(set(branches) - {j.name for j in roots})
    if orphans:
        raise ConfigError(f"jobs: branches of {orphans}, which are not among the jobs; run their trunks with them")
    ctx = mp.get_context("spawn")
    progress = make_progress()
    progress.disable = quiet
    totals = {j.name: total_steps(j) for j in jobs}
    done = dict.fromkeys(totals, 0)

    def advance(name: str, step: int) -> None:
        progress.start_task(tasks[name])  # the clock starts when the run does
        progress.update(tasks[name], completed=step, visible=step < totals[name])
        done[name] = step
        progress.update(overall, completed=sum(done.values()))

    with ctx.Manager() if workers != 1 else nullcontext() as manager, progress:
        overall = progress.add_task(f"{len(jobs)} runs", total=sum(totals.values()), info="", rate="")
        tasks = {  # a bar shows while its run trains: re-drawing hundreds of bars took a third of a core
            j.name: progress.add_task(j.name, total=totals[j.name], start=False, visible=False, info="", rate="")
            for j in jobs
        }
        if workers == 1:  # one at a time, in this process: no pool to start, and a debugger sees the runs
            direct = _Direct(advance)
            outcome = collect(
                ((j, j.name) for j in roots),
                raise_errors,
                lambda j: _run_chain(j, branches.get(j.name, []), direct, replace_stale),
            )
            return _with_branches(outcome, branches)
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=ctx) as pool:
            futures = {
                pool.submit(_run_chain, job, branches.get(job.name, []), queue, replace_stale, os.getpid()): job.name
                for job in roots
            }
            chain = {r.name: [r.name, *(b.name for b in branches.get(r.name, []))] for r in roots}
            while not all(f.done() for f in futures) or not queue.empty():
                for f in [f for f in futures if f.done() and done[futures[f]] < totals[futures[f]]]:
                    for name in chain[futures[f]]:  # finished (or skipped: already finished)
                        done[name] = totals[name]
                        progress.update(tasks[name], completed=totals[name], visible=False)
                try:
                    name, step, _ = queue.get(timeout=0.2)
                except queue_lib.Empty:
                    progress.update(overall, completed=sum(done.values()))
                    continue
                advance(name, step)
    return _with_branches(collect(futures.items(), raise_errors, lambda f: f.result()), branches)


def _with_branches(outcome: dict[str, str | None], branches: dict[str, list[Job]]) -> dict[str, str | None]:
    """A chain's outcome is each of its runs' outcome."""
    return outcome | {b.name: outcome[trunk] for trunk, bs in branches.items() for b in bs}


@dataclass
class _Direct:
    """Stands in for the workers' queue when runs train in this process: progress goes straight to the bars."""

    advance: Callable[[str, int], None]

    def put(self, item: tuple[str, int, int]) -> None:
        self.advance(item[0], item[1])


def prepare_jobs(jobs: list[Job]) -> list[Job]:
    """Unique names; one thread per run unless set; most steps first (better packing on few cores: the
    longest runs must not be the last to start)."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"jobs: names must be unique, got {names}")
    jobs = [dataclasses.replace(j, train=_one_thread(j.train)) for j in jobs]
    return sorted(jobs, key=lambda j: -total_steps(j))


def total_steps(job: Job) -> int:
    from unmask.data.dataset import TokenData
    from unmask.training import Budget

    return Budget.of(TokenData(job.data), job.train).total_steps


def collect(pending, raise_errors: bool, result) -> dict[str, str | None]:
    """{name: None or the error's message} from (handle, name) pairs; `result(handle)` re-raises a failure."""
    outcome: dict[str, str | None] = {}
    first: BaseException | None = None
    for handle, name in pending:
        try:
            result(handle)
            outcome[name] = None
        except Exception as e:  # a run's failure: reported (and retried on request), the others go on
            cause = getattr(e, "cause", None) or e  # Ray wraps the task's own exception
            outcome[name] = (" ".join(str(cause).split()) or type(cause).__name__)[:300]
            first = first or cause
    if raise_errors and first is not None:
        raise first
    return outcome


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

    return cfg if cfg.runtime.threads else cfg.with_flat(threads=1)
