"""The multi-run runner: one process per run, same-run detection, resume, no stale results."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_train_config
from unmask.checkpoint import Checkpoints, RunLock
from unmask.config import ConfigError, ModelConfig
from unmask.run import Run
from unmask.study import Job, run_jobs, same_run
from unmask.study.local import prepare_jobs
from unmask.training import train


def jobs_for(data_dir, root, epochs: int = 1, **train_overrides) -> list[Job]:
    model = ModelConfig(size="tiny")
    return [
        Job(
            f"{o}-E1",
            str(data_dir),
            str(root / f"{o}-E1"),
            model,
            tiny_train_config(objective=o, epochs=epochs, **train_overrides),
        )
        for o in ("ar", "mdm")
    ]


def steps_logged(run_dir) -> list[int]:
    return [r["step"] for r in Run(run_dir).metrics() if "loss" in r]


def test_runs_in_parallel_then_skips_finished_runs(tiny_data_dir, tmp_path):
    jobs = jobs_for(tiny_data_dir, tmp_path)
    assert all(same_run(j) is None for j in jobs)
    assert sorted(run_jobs(jobs, workers=2, quiet=True)) == ["ar-E1", "mdm-E1"]
    assert all(same_run(j) is True for j in jobs)
    assert Run(jobs[0].out).train_config.runtime.threads == 1  # one thread per run
    before = {j.name: (Run(j.out).path / "last.safetensors").stat().st_mtime_ns for j in jobs}
    run_jobs(jobs, workers=2, quiet=True)  # nothing left to train
    assert before == {j.name: (Run(j.out).path / "last.safetensors").stat().st_mtime_ns for j in jobs}


def test_the_runs_with_most_steps_start_first(tiny_data_dir, tmp_path):
    """Packing on few cores: a run with fewer epochs but a bigger batch of steps (here: a smaller batch) goes first."""
    model = ModelConfig(size="tiny")
    few_epochs_many_steps = Job(
        "a", str(tiny_data_dir), str(tmp_path / "a"), model, tiny_train_config(epochs=2, batch_size=1)
    )
    many_epochs_few_steps = Job(
        "b", str(tiny_data_dir), str(tmp_path / "b"), model, tiny_train_config(epochs=3, batch_size=64)
    )
    assert [j.name for j in prepare_jobs([many_epochs_few_steps, few_epochs_many_steps])] == ["a", "b"]


def test_an_unfinished_run_is_resumed_not_restarted(tiny_data_dir, tiny_data, tmp_path):
    job = jobs_for(tiny_data_dir, tmp_path)[1]
    partial = job.train.with_flat(stop_at_step=3, threads=1)
    train(job.data, job.out, job.model, partial, quiet=True, tensorboard=False)
    assert steps_logged(job.out) == [1, 2, 3]
    run_jobs([job], workers=1, quiet=True)
    total = Run(job.out).budget()["total_steps"]
    assert steps_logged(job.out) == list(range(1, total + 1))


def test_a_run_with_other_settings_is_refused_and_left_alone(tiny_data_dir, tmp_path):
    job = jobs_for(tiny_data_dir, tmp_path)[0]
    run_jobs([job], workers=1, quiet=True)
    config_before = (tmp_path / "ar-E1" / "config.json").read_text()
    other = dataclasses.replace(job, train=job.train.with_flat(lr=1e-4))
    assert same_run(other) is False
    for change in ({"local_prior": 5.0}, {"qk_norm": True}, {"init_std": 0.05}, {"dropout": 0.1}):
        assert same_run(dataclasses.replace(job, model=dataclasses.replace(job.model, **change))) is False, change
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        run_jobs([other], workers=1, quiet=True)
    assert (tmp_path / "ar-E1" / "config.json").read_text() == config_before


def alive(pid: int) -> bool:
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]  # a zombie is gone
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
def test_killing_the_study_process_stops_its_workers_with_a_checkpoint(tiny_data_dir, tmp_path):
    """A killed `study run` leaves no workers training on unseen, holding their runs' locks against the next."""
    script = (
        "import sys; from pathlib import Path; from tests.study.test_local import jobs_for; "
        "from unmask.study import run_jobs; "
        "run_jobs(jobs_for(sys.argv[1], Path(sys.argv[2]), epochs=400), workers=2, quiet=True)"
    )
    repo = Path(__file__).parents[2]
    study = subprocess.Popen([sys.executable, "-c", script, str(tiny_data_dir), str(tmp_path)], cwd=repo)
    runs = [tmp_path / "ar-E1", tmp_path / "mdm-E1"]
    deadline = time.monotonic() + 120
    while not all((r / "metrics.jsonl").is_file() and len(steps_logged(r)) >= 20 for r in runs):
        assert study.poll() is None and time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.2)
    workers = [int((r / ".lock").read_text()) for r in runs]
    study.send_signal(signal.SIGKILL)
    study.wait()
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers still training after their study process was killed"
        time.sleep(0.2)
    for run in runs:
        RunLock(run).check()  # free: the next study run may resume it
        last = steps_logged(run)[-1]
        assert Checkpoints(run).latest()["step"] == last < 400 * 12  # stopped early, with a checkpoint at its step
        assert os.path.getsize(run / "metrics.jsonl") > 0
