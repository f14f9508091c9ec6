"""One writer per run, a run bound to its data, no silent restart, a complete final step, disk full."""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import TINY_DATA
from tests.training.conftest import assert_same_weights, configs, losses, run_in_process, start_cli, wait_for_step
from unmask import cli
from unmask.config import ConfigError
from unmask.data import TokenData, prepare
from unmask.run import Run, read_metrics
from unmask.training import TrainingError, train


def one_line_error(capsys, *args) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unmask: error: "), lines
    return code, lines[0]


def wait_for_lock_holder(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / ".lock").exists() and (out / ".lock").read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise TimeoutError("the first trainer never took the lock")


# --- one writer per run directory --------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_a_sigkill_frees_the_lock(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_cli(tiny_data, out, epochs=200)  # long enough to still be running
    try:
        wait_for_lock_holder(out, first)
        for extra in ([], ["--resume", "true"]):  # a second run, or a concurrent resume
            code, line = one_line_error(capsys, "train", "--data", tiny_data.path, "--out", out, *extra)
            assert code == 2 and f"is being written by PID {first.pid}" in line
        wait_for_step(first, out, 6)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    last_step = max(r["step"] for r in read_metrics(out) if "step" in r)  # the kill may come well past step 6
    # The kernel released the lock with the process: a resume takes it at once and trains on.
    stop = str(last_step + 6)
    assert cli.main(["train", "--out", str(out), "--resume", "true", "--train.checkpoint.stop_at_step", stop]) == 0
    assert max(r["step"] for r in read_metrics(out) if "step" in r) == last_step + 6
    assert (out / ".lock").read_text().strip() != str(first.pid)


def test_concurrent_new_runs_on_one_directory_leave_one_clean_log(tiny_data, tmp_path):
    out = tmp_path / "run"
    procs = [start_cli(tiny_data, out, epochs=1) for _ in range(2)]
    results = [p.communicate() + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[2] == 2)[1].strip().splitlines()
    assert len(refused) == 1 and ("being written by PID" in refused[0] or "already exists" in refused[0])
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # no interleaved or duplicated lines
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


# --- a lost manifest never restarts a run ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["deleted", "emptied", "empty list", "garbage"])
def test_a_lost_checkpoint_manifest_resumes_from_the_files(tiny_data, reference, tmp_path, damage):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=23)
    manifest = out / "checkpoints" / "manifest.json"
    {
        "deleted": lambda: manifest.unlink(),
        "emptied": lambda: manifest.write_text(""),
        "empty list": lambda: manifest.write_text('{"checkpoints": []}'),
        "garbage": lambda: manifest.write_text('{"checkpoints": [{"step": 5, "file": "../../config.json"}]}'),
    }[damage]()
    train(None, out, resume=True, quiet=True, tensorboard=False)
    assert losses(out) == losses(reference)  # continued from step 20, never from 0
    assert_same_weights(out, reference)


def test_a_run_whose_checkpoints_are_all_gone_refuses_to_restart(tiny_data, tmp_path):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=12)
    shutil.rmtree(out / "checkpoints")
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="logged 12 steps but has no checkpoint to resume from"):
        train(None, out, resume=True, quiet=True, tensorboard=False)
    assert (out / "metrics.jsonl").read_text() == metrics  # the history is kept


# --- the final step is complete ----------------------------------------------------------------------


def test_resuming_a_finished_run_repairs_a_stale_last_and_a_missing_result(tiny_data, reference, tmp_path):
    out = shutil.copytree(reference, tmp_path / "run")
    stale = load_file(str(out / "best.safetensors"))
    stale = {k: v + 1 for k, v in stale.items()}
    save_file(stale, str(out / "last.safetensors"))  # as if killed after the checkpoint, before the weights
    records = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(records[:-1]) + "\n")  # and before the result was logged
    train(None, out, resume=True, quiet=True, tensorboard=False)
    assert_same_weights(out, reference)
    final = [r for r in read_metrics(out) if "final_val_loss" in r]
    expected = [r for r in read_metrics(reference) if "final_val_loss" in r]
    assert len(final) == 1 and final[0]["final_val_loss"] == pytest.approx(expected[0]["final_val_loss"])


# --- a run is bound to its data and its settings ------------------------------------------------------


@pytest.fixture
def run_on_own_data(tiny_data_dir, tmp_path) -> tuple[Path, Path]:
    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    run = run_in_process(TokenData(data), tmp_path / "run", stop_at_step=10)
    return data, run


def test_resume_refuses_data_prepared_again_with_another_tokenizer_of_the_same_size(run_on_own_data, capsys):
    data, run = run_on_own_data
    prepare(dataclasses.replace(TINY_DATA, seed=1), data, overwrite=True, quiet=True)  # same vocabulary size
    assert TokenData(data).vocab_size == Run(run).model_config.vocab_size
    before = (run / "metrics.jsonl").read_text()
    code, line = one_line_error(capsys, "train", "--out", run, "--resume", "true")
    assert code == 2 and "is not the file run" in line
    code, line = one_line_error(capsys, "eval", run)
    assert code == 2 and "is not the file run" in line
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_refuses_a_truncated_token_file(run_on_own_data, capsys):
    data, run = run_on_own_data
    train_bin = data / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:-64])
    code, line = one_line_error(capsys, "train", "--out", run, "--resume", "true")
    assert code == 2 and "train.bin" in line


def test_resume_refuses_settings_that_differ_from_the_saved_run(run_on_own_data, capsys):
    _, run = run_on_own_data
    code, line = one_line_error(capsys, "train", "--out", run, "--resume", "true", "--train.optim.lr", "0.5")
    assert code == 2 and "train.optim.lr=0.5 (the run has 0.003)" in line
    code, line = one_line_error(capsys, "train", "--out", run, "--resume", "true", "--model.n_layer", "7")
    assert code == 2 and "model.n_layer=7" in line
    # runtime controls are free to change
    assert cli.main(["train", "--out", str(run), "--resume", "true", "--train.checkpoint.stop_at_step", "12"]) == 0


# --- disk full ---------------------------------------------------------------------------------------


def test_a_full_disk_mid_checkpoint_is_one_line_naming_the_last_good_state(tiny_data, tmp_path):
    """RLIMIT_FSIZE makes every write past 1 MB fail with EFBIG, as a full disk would (Python ignores SIGXFSZ)."""
    model, cfg = configs(tiny_data, epochs=1)
    out = tmp_path / "run"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run(
        [sys.executable, "-m", "unmask", "train", "--data", str(tiny_data.path), "--out", str(out),
         "--model.size", "tiny", "--train.objective", "mdm", "--train.batch_size", "8", "--train.epochs", "1",
         "--tensorboard", "false"],
        capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("unmask: error: could not save") and "last good checkpoint: none" in lines[0]
    assert "free space, then: unmask train --out" in lines[0]
    assert not list(out.rglob("*.tmp"))  # nothing half-written left behind
    del model
    assert isinstance(TrainingError("x"), Exception) and torch.__version__


def test_a_run_killed_before_its_first_checkpoint_starts_again_as_the_same_run(tiny_data, reference, tmp_path):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=4)  # the first checkpoint is due at step 5
    shutil.rmtree(out / "checkpoints")  # as if killed while the first checkpoint was being written
    train(None, out, resume=True, quiet=True, tensorboard=False)
    assert losses(out) == losses(reference)  # from step 0 again, one record per step
    assert_same_weights(out, reference)
