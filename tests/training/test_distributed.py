"""Several processes (torchrun, gloo on CPU): DDP and FSDP2 train the run one process would, and a checkpoint
written by two processes resumes in one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import TINY_DATA
from unmask.run import Run, read_metrics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed"),
]

BASE = ["--model.size", "tiny", "--train.epochs", "2", "--train.batch_size", "8", "--train.optim.lr", "3e-3",
        "--train.eval.every", "10", "--train.eval.mc_passes", "2", "--train.eval.final_mc_passes", "2",
        "--train.runtime.device", "cpu", "--train.runtime.threads", "1", "--tensorboard", "false"]  # fmt: skip


def unmask_train(data, out, processes: int, *args: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "unmask"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                    "-m", "unmask"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [*launcher, "train", "--data", str(data), "--out", str(out), *BASE, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def steps(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "loss" in r]


def assert_same_run(a, b) -> None:
    sa, sb = steps(a), steps(b)
    assert [r["step"] for r in sa] == [r["step"] for r in sb]  # one record per step: only rank 0 logs
    assert [r["tokens_seen"] for r in sa] == [r["tokens_seen"] for r in sb]
    assert [r["loss"] for r in sa] == pytest.approx([r["loss"] for r in sb], rel=1e-4)
    wa, wb = Run(a).load_model("last").state_dict(), Run(b).load_model("last").state_dict()
    for name, w in wa.items():
        torch.testing.assert_close(w, wb[name], rtol=1e-3, atol=1e-5, msg=name)
    assert Run(a).final_result()["loss"] == pytest.approx(Run(b).final_result()["loss"], rel=1e-4)


ACCUMULATE = ["--train.micro_batch_size", "2"]
"""Two micro-batches per process and step: gradients accumulate (DDP syncs only on the last)."""


@pytest.mark.parametrize(
    ("objective", "parallel", "extra"),
    [
        ("ar", "ddp", []),
        ("mdm", "ddp", []),
        ("mdm", "fsdp", []),
        ("ar", "ddp", ACCUMULATE),
        ("mdm", "fsdp", [*ACCUMULATE, "--train.runtime.activation_checkpointing", "true"]),
    ],
    ids=["ar-ddp", "mdm-ddp", "mdm-fsdp", "ar-ddp-accumulate", "mdm-fsdp-accumulate-recompute"],
)
def test_two_processes_train_the_run_one_process_would(tiny_data_dir, tmp_path, objective, parallel, extra):
    # The same global batch (8) in the same micro-batches (4, or 2 when accumulating): the processes share them.
    micro = extra[extra.index("--train.micro_batch_size") + 1] if extra else "4"
    one = tmp_path / "one"
    unmask_train(tiny_data_dir, one, 1, "--train.objective", objective, "--train.micro_batch_size", micro)
    two = tmp_path / "two"
    done = unmask_train(
        tiny_data_dir, two, 2, "--train.objective", objective, "--train.runtime.parallel", parallel, *extra
    )
    assert_same_run(one, two)
    assert steps(two)[-1]["tokens_seen"] == 2 * TINY_DATA.unique_tokens  # E·U exactly, across both processes
    assert done.stdout.count("final validation") == 1  # rank 0 speaks for the run
    assert not list(two.glob("**/*.tmp"))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_checkpoint_of_two_processes_resumes_in_one(tiny_data_dir, tmp_path, parallel):
    full = tmp_path / "full"
    unmask_train(tiny_data_dir, full, 1, "--train.micro_batch_size", "4")
    part = tmp_path / "part"
    unmask_train(tiny_data_dir, part, 2, "--train.runtime.parallel", parallel, "--train.checkpoint.stop_at_step", "7",
                 "--train.micro_batch_size", "4")  # fmt: skip
    assert [r["step"] for r in steps(part)] == list(range(1, 8))
    unmask_train(tiny_data_dir, part, 1, "--resume", "true")
    assert_same_run(full, part)
