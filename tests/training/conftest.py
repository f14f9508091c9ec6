"""Helpers of the training tests: the same tiny MDM run in-process and as a CLI process, and its reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import tiny_model_config, tiny_train_config
from unmask.config import ModelConfig, TrainConfig, to_dict
from unmask.data.dataset import TokenData
from unmask.run import read_metrics
from unmask.training import train

RUN = dict(objective="mdm", epochs=8, checkpoint_every=5, keep_checkpoints=2)  # 96 steps


def configs(data: TokenData, **overrides) -> tuple[ModelConfig, TrainConfig]:
    return tiny_model_config(data, causal=False), tiny_train_config(**{**RUN, **overrides})


def run_in_process(data: TokenData, out: Path, **overrides) -> Path:
    model, cfg = configs(data, **overrides)
    return train(data.path, out, model, cfg, quiet=True, tensorboard=False)


def start_cli(data: TokenData, out: Path, **overrides) -> subprocess.Popen:
    """`python -m unmask train` on the same configs as run_in_process, in its own process."""
    model, cfg = configs(data, **overrides)
    config = {"data": str(data.path), "out": str(out), "model": to_dict(model), "train": to_dict(cfg)}
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump({**config, "tensorboard": False}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, like the in-process reference: bitwise equal
    return subprocess.Popen(
        [sys.executable, "-m", "unmask", "train", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()}"
        if any(r.get("step", 0) >= step for r in _records(out)):
            return
        time.sleep(0.002)
    raise TimeoutError(step)


def _records(out: Path) -> list[dict]:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[:-1]]  # the last line may be half-written


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out) if "loss" in r]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return run_in_process(tiny_data, tmp_path_factory.mktemp("ref") / "run")
