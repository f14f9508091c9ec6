"""Reliability: runs survive SIGKILL, SIGTERM, corrupt checkpoints, NaNs, full disks and bad input.

The kill tests run real `python -m unmask train` processes and compare the resumed run
bitwise with an uninterrupted one (CPU, one thread each).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import signal
from collections import namedtuple

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from tests.training.conftest import assert_same_weights, configs, losses, run_in_process, start_cli, wait_for_step
from unmask import cli, objectives
from unmask.checkpoint import Checkpoints
from unmask.config import ConfigError, DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from unmask.data.dataset import TokenData
from unmask.data.prepare import TokenWriter
from unmask.run import read_metrics
from unmask.training import Budget, TrainingError, TrainingStopped, train


def test_sigkill_at_random_steps_then_resume_ends_bitwise_equal(tiny_data, reference, tmp_path):
    total = len(losses(reference))
    kill_steps = sorted(random.Random().sample(range(3, total // 2), 2))
    for kill_at in kill_steps:
        out = tmp_path / f"killed_at_{kill_at}"
        proc = start_cli(tiny_data, out)
        wait_for_step(proc, out, kill_at)
        proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: possibly mid-checkpoint
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        saved = Checkpoints(out).latest()
        assert saved is None or saved["step"] < total, (kill_at, saved)

        train(None, out, resume=True, quiet=True, tensorboard=False)
        assert losses(out) == losses(reference), f"killed at step >= {kill_at}"
        assert_same_weights(out, reference)
        assert not list(out.rglob("*.tmp"))


def test_sigterm_saves_at_the_step_boundary_and_exits_zero(tiny_data, reference, tmp_path):
    out = tmp_path / "run"
    proc = start_cli(tiny_data, out)
    wait_for_step(proc, out, 23)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    last = err.strip().splitlines()[-1]
    step = Checkpoints(out).latest()["step"]
    assert f"SIGTERM: stopped at step {step}/96 with a checkpoint" in last
    assert f"continue with: unmask train --out {out} --resume true" in last
    assert losses(out) == losses(reference)[:step]  # stopped exactly at a step boundary, nothing lost

    train(None, out, resume=True, quiet=True, tensorboard=False)
    assert losses(out) == losses(reference)
    assert_same_weights(out, reference)


def test_ctrl_c_in_process_stops_at_the_step_boundary_with_a_checkpoint(tiny_data, tmp_path):
    model, cfg = configs(tiny_data)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a job started in the background

    def press_ctrl_c(info) -> None:  # a per-step hook
        if info.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingStopped, match=r"SIGINT: stopped at step 7/96 with a checkpoint"):
        train(tiny_data.path, tmp_path / "run", model, cfg, quiet=True, tensorboard=False, hooks=[press_ctrl_c])
    assert Checkpoints(tmp_path / "run").latest()["step"] == 7
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_checkpoints_keep_the_last_k_with_checksums(tiny_data, tmp_path):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=23, keep_checkpoints=3)
    entries = Checkpoints(out).entries()
    assert [e["step"] for e in entries] == [15, 20, 23]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "manifest.json",
        "step_000000015.pt",
        "step_000000020.pt",
        "step_000000023.pt",
    ]
    assert all(len(e["sha256"]) == 64 and e["bytes"] > 0 for e in entries)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
def test_a_corrupt_latest_checkpoint_is_detected_and_the_previous_one_used(
    tiny_data, reference, tmp_path, capfd, damage
):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=23)
    latest = out / "checkpoints" / "step_000000023.pt"
    data = latest.read_bytes()
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        latest.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        latest.unlink()
    capfd.readouterr()

    train(None, out, resume=True, quiet=True, tensorboard=False)
    err = capfd.readouterr().err
    reason = {"truncate": "(truncated?)", "flip_byte": "SHA-256 does not match", "delete": "file is missing"}[damage]
    assert f"unmask: warning: checkpoint {latest} is unusable" in err and reason in err
    assert "falling back to step_000000020.pt" in err
    assert losses(out) == losses(reference)  # resumed from step 20: the same run
    assert_same_weights(out, reference)


def test_every_checkpoint_corrupt_is_an_error_not_a_silent_restart(tiny_data, tmp_path):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=12)
    for path in (out / "checkpoints").glob("step_*.pt"):
        path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="every checkpoint in .* is corrupt"):
        train(None, out, resume=True, quiet=True, tensorboard=False)


def nan_on_steps(monkeypatch, steps: set[int]) -> None:
    """Make the MDM loss non-finite on the given (1-based) training steps; validation is untouched."""
    calls = {"n": 0}

    class NaNOnSteps(objectives.OBJECTIVES["mdm"]):
        def loss(self, model, batch, sp, generator=None):
            out = super().loss(model, batch, sp, generator)
            calls["n"] += 1
            if calls["n"] in steps:
                return objectives.LossOutput(out.loss_sum * float("nan"), out.n_tokens)
            return out

    monkeypatch.setitem(objectives.OBJECTIVES, "mdm", NaNOnSteps)


def test_non_finite_steps_are_skipped_and_counted(tiny_data, tmp_path, monkeypatch):
    nan_on_steps(monkeypatch, {3, 4, 9})
    out = run_in_process(tiny_data, tmp_path / "run", epochs=1)
    records = [r for r in read_metrics(out) if "loss" in r]
    assert [r["skipped_steps"] for r in records][:10] == [0, 0, 1, 2, 2, 2, 2, 2, 3, 3]
    assert all(np.isfinite(v.numpy()).all() for v in load_file(str(out / "last.safetensors")).values())


def test_too_many_bad_steps_in_a_row_stop_with_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    nan_on_steps(monkeypatch, set(range(8, 200)))
    with pytest.raises(TrainingError) as info:
        run_in_process(tiny_data, tmp_path / "run", max_bad_steps=4)
    message = str(info.value)
    assert "non-finite for 4 steps in a row (steps 8-11, all skipped)" in message
    assert f"last good checkpoint: {tmp_path / 'run' / 'checkpoints' / 'step_000000005.pt'} (step 5)" in message


def test_unwritable_output_fails_before_training(capsys, tiny_data_dir, tmp_path):
    (tmp_path / "a_file").write_text("")
    code = cli.main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "a_file" / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        f"unmask: error: cannot create output {tmp_path / 'a_file' / 'run'}: {tmp_path / 'a_file'} is a file, "
        "not a directory; choose another --out"
    )
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code = cli.main(["train", "--data", str(tiny_data_dir), "--out", str(locked / "run")])
        assert code == 2 and "is not writable (Permission denied)" in capsys.readouterr().err
        assert list(locked.iterdir()) == []


def test_too_little_disk_space_fails_before_training(capsys, tiny_data_dir, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("unmask.checkpoint.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    code = cli.main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "run"), "--model.size", "tiny"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"unmask: error: not enough disk space for {tmp_path / 'run'}: a checkpoint")
    assert "MiB free; free space or choose another --out" in err
    assert not (tmp_path / "run").exists()


def test_disk_full_while_checkpointing_names_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: step 15
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr("unmask.checkpoint.torch.save", save)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        run_in_process(tiny_data, out)
    assert str(info.value) == (
        f"could not save the checkpoint of step 15 in {out} (No space left on device); last good checkpoint: "
        f"{out / 'checkpoints' / 'step_000000010.pt'} (step 10); free space, then: "
        f"unmask train --out {out} --resume true"
    )
    assert not list(out.rglob("*.tmp"))  # no half-written file left behind
    assert [e["step"] for e in Checkpoints(out).entries()] == [5, 10]


# -- bad input: one line naming the key and what is allowed, nothing left on disk ---------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "train:\n  epoch: 3\n",
            "unknown option 'train.epoch' for unmask train; did you mean 'train.epochs'? "
            "allowed: train.batch_size, train.epochs, train.init_from,",
        ),
        ("train:\n  epochs: two\n", "train.epochs='two': expected int"),
        ("train:\n  objective: gpt\n", "train.objective='gpt': must be one of ar, mdm, ar_orderings"),
        ("train:\n  checkpoint:\n    keep: 0\n", "train.checkpoint.keep=0: must be >= 1"),
        ("train:\n  optim:\n    max_bad_steps: 0\n", "train.optim.max_bad_steps=0: must be >= 1"),
        (
            "train:\n  optim:\n    lrr: 0.1\n",
            "unknown option 'train.optim.lrr' for unmask train; did you mean 'train.optim.lr'?",
        ),
        ("model:\n  d_model: 100\n  n_head: 3\n", "model.d_model=100 is not divisible by model.n_head=3"),
        ("model:\n  size: huge\n", "model.size='huge': must be one of"),
        ("train: [1, 2\n", "Problems parsing config"),
    ],
)
def test_bad_config_files_fail_with_one_line(capsys, tiny_data_dir, tmp_path, yaml_text, expected):
    (tmp_path / "bad.yaml").write_text(yaml_text)
    code = cli.main(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(tiny_data_dir), "--out",
                     str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("unmask: error: "), err
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_typo_on_the_command_line_suggests_the_option(capsys, tmp_path):
    code = cli.main(["train", "--out", str(tmp_path / "run"), "--train.lrr", "1e-3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown option 'train.lrr' for unmask train; did you mean 'train.optim.lr'?" in err
    assert not (tmp_path / "run").exists()


def test_a_hand_edited_run_config_with_a_wrong_type_is_named(tiny_data, tmp_path, capsys):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=5)
    config = json.loads((out / "config.json").read_text())
    config["train"]["epochs"] = "12"
    (out / "config.json").write_text(json.dumps(config))
    assert cli.main(["train", "--out", str(out), "--resume", "true"]) == 2
    assert capsys.readouterr().err.strip().endswith("config.json is invalid: TrainConfig.epochs='12': expected int")


def test_checkpoints_never_execute_pickled_code(tiny_data, tmp_path):
    """A state file carrying a pickled callable is refused, not run (weights_only=True)."""
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=5)
    path = out / "checkpoints" / "step_000000005.pt"
    torch.save({"step": 5, "payload": os.system}, path)  # a pickled global
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    manifest["checkpoints"][-1].pop("sha256")
    manifest["checkpoints"][-1].pop("bytes")  # pretend it passed the checksum: loading itself must refuse
    (out / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="every checkpoint"):
        train(None, out, resume=True, quiet=True, tensorboard=False)


# -- property-based ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.lists(st.integers(0, 70_000), max_size=40), max_size=12),
    limit=st.integers(1, 300),
    seq_len=st.integers(2, 17),
)
def test_shard_writer_and_reader_round_trip(tmp_path_factory, chunks, limit, seq_len):
    """Whatever is written (cut at exactly `limit`) reads back as sequences, padded only at the very end."""
    folder = tmp_path_factory.mktemp("shard")
    dtype = np.uint32 if max((max(c, default=0) for c in chunks), default=0) >= 2**16 else np.uint16
    writer = TokenWriter(folder / "train.bin", limit, dtype)
    for chunk in chunks:
        if not writer.full:
            writer.write(chunk)
    writer.close()
    expected = [t for c in chunks for t in c][:limit]
    if not expected:
        return
    pad = 70_001
    manifest = {"seq_len": seq_len, "pad_id": pad, "mask_id": pad + 1, "eod_id": 0, "vocab_size": pad + 2,
                "dtype": np.dtype(dtype).name, "unique_tokens": len(expected), "val_tokens": 0}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = TokenData(folder)
    flat = data.batch("train", np.arange(data.n_sequences("train"))).tokens.flatten().tolist()
    assert flat[: len(expected)] == expected
    assert set(flat[len(expected) :]) <= {pad} and len(flat) - len(expected) < seq_len


class _Sized:
    def __init__(self, n_tokens: int, seq_len: int):
        self.seq_len, self._n = seq_len, n_tokens

    def n_tokens(self, split: str) -> int:
        return self._n

    def n_sequences(self, split: str) -> int:
        return -(-self._n // self.seq_len)


@given(
    n_tokens=st.integers(1, 10**9), seq_len=st.integers(2, 8192), batch=st.integers(1, 4096), epochs=st.integers(1, 500)
)
def test_budget_sees_exactly_e_times_u_tokens(n_tokens, seq_len, batch, epochs):
    budget = Budget.of(_Sized(n_tokens, seq_len), TrainConfig(batch_size=batch, epochs=epochs))
    assert budget.tokens_to_see == n_tokens * epochs
    # every sequence once per epoch: the last step of an epoch is partial, never empty, never wraps
    assert (budget.steps_per_epoch - 1) * batch < budget.n_sequences <= budget.steps_per_epoch * batch
    assert budget.total_steps == budget.steps_per_epoch * epochs
    assert 1 <= budget.warmup_steps <= budget.total_steps


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)


@pytest.mark.parametrize("cls", [DataConfig, ModelConfig, TrainConfig])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_config_parsing_accepts_or_names_the_problem(cls, data):
    """Any mapping either builds a config that round-trips, or raises ConfigError — never another exception."""
    names = [f.name for f in dataclasses.fields(cls)]
    keys = st.sampled_from(names) | st.text(min_size=1, max_size=6)
    values = data.draw(st.dictionaries(keys, json_values, max_size=4))
    try:
        cfg = from_dict(cls, values)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    fields = {k: v for k, v in to_dict(cfg).items() if k != "size"}  # `size` only fills in the shape fields
    assert {k: v for k, v in to_dict(from_dict(cls, fields)).items() if k != "size"} == fields
