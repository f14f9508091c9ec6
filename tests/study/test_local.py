"""The multi-run runner: one process per run, same-run detection, resume, no stale results."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import tiny_train_config
from unmask.config import ConfigError, ModelConfig
from unmask.run import Run
from unmask.study import Job, run_jobs, same_run
from unmask.study.local import prepare_jobs
from unmask.training import train


def jobs_for(data_dir, root, **train_overrides) -> list[Job]:
    model = ModelConfig(size="tiny")
    return [
        Job(
            f"{o}-E1",
            str(data_dir),
            str(root / f"{o}-E1"),
            model,
            tiny_train_config(objective=o, epochs=1, **train_overrides),
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
    assert Run(jobs[0].out).train_config.threads == 1  # one thread per run
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
    partial = dataclasses.replace(job.train, stop_at_step=3, threads=1)
    train(job.data, job.out, job.model, partial, quiet=True, tensorboard=False)
    assert steps_logged(job.out) == [1, 2, 3]
    run_jobs([job], workers=1, quiet=True)
    total = Run(job.out).budget()["total_steps"]
    assert steps_logged(job.out) == list(range(1, total + 1))


def test_a_run_with_other_settings_is_refused_and_left_alone(tiny_data_dir, tmp_path):
    job = jobs_for(tiny_data_dir, tmp_path)[0]
    run_jobs([job], workers=1, quiet=True)
    config_before = (tmp_path / "ar-E1" / "config.json").read_text()
    other = dataclasses.replace(job, train=dataclasses.replace(job.train, lr=1e-4))
    assert same_run(other) is False
    for change in ({"local_prior": 5.0}, {"qk_norm": True}, {"init_std": 0.05}, {"dropout": 0.1}):
        assert same_run(dataclasses.replace(job, model=dataclasses.replace(job.model, **change))) is False, change
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        run_jobs([other], workers=1, quiet=True)
    assert (tmp_path / "ar-E1" / "config.json").read_text() == config_before
