"""A full disk (ENOSPC) or a refused write (EACCES) under every writer: the OS's own words, the file named, one line.

Whatever writes the file (torch.save's zip writer, safetensors, JSON, CSV, Parquet, JSONL), the user reads "No
space left on device" or "Permission denied" and which file, never torch's "enforce fail at inline_container.cc
... unexpected pos"; the command exits 1 (the input was fine, the disk was not) and leaves nothing half-written:
no temporary file, the previous version of the file intact.

A full disk is real where the writer opens its own temporary file: that file is made a link to /dev/full, which
fails every write with ENOSPC. Never is /dev/full itself given as a path: a writer that writes a temporary file and
renames it (safetensors) would replace the device; there the writer's own error is raised in its place, and so is a
refused write (tests run as root, whom permission bits do not stop).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.bad_input.contract import INTERNAL, Outcome, Workspace, snapshot, unmask
from tests.bad_input.test_study import study_copy

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")

NO_SPACE = os.strerror(errno.ENOSPC)
DENIED = os.strerror(errno.EACCES)


def full_at(path: Path) -> None:
    """Every write to `path` fails as on a full disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/full")


def tmp_of(path: Path) -> Path:
    """The temporary file unmask.checkpoint.atomic_path writes before renaming it to `path`."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def assert_disk_failure(outcome: Outcome, reason: str, name: str) -> None:
    shown = f"exit {outcome.code}\nstderr: {outcome.err[-1500:]}"
    assert outcome.code == 1, shown
    assert "Traceback" not in outcome.err and INTERNAL not in outcome.err, shown
    assert "enforce fail" not in outcome.err and "unexpected pos" not in outcome.err, shown
    line = [line for line in outcome.err.splitlines() if line.strip()][-1]
    assert line.startswith("unmask: error: ") and reason in line and name in line, shown
    assert sum(ln.startswith("unmask: error: ") for ln in outcome.err.splitlines()) == 1, shown


def assert_nothing_half_written(root: Path, before: dict, target: Path) -> None:
    assert not [p for p in root.rglob("*.tmp*")], "a temporary file was left behind"
    assert snapshot(root).get(str(target)) == before.get(str(target)), f"{target} was changed"


# ---------------------------------------------------------------------------------------------
# Files written atomically (JSON, CSV, Parquet, JSONL): a link to /dev/full where the temporary file goes


def _study(ws: Workspace, study_dir: Path, action: str, file: str) -> tuple[list, Path]:
    study = study_copy(ws, study_dir, full=True)
    target = study.out / file
    full_at(tmp_of(target))
    more = ["--n_boot", 0] if action == "fit" else ["--workers", 1] if action == "run" else []
    return ["study", action, study.config, *more], target


ATOMIC: dict[str, Callable[[Workspace, Path], tuple[list, Path]]] = {
    "study run: results.csv (CSV)": lambda ws, s: _study(ws, s, "run", "results.csv"),
    "study run: results.parquet (Parquet)": lambda ws, s: _study(ws, s, "run", "results.parquet"),
    "study run: failures.json (JSON)": lambda ws, s: _study(ws, s, "run", "failures.json"),
    "study fit: fit.json (JSON)": lambda ws, s: _study(ws, s, "fit", "fit.json"),
    "eval --out: CSV": lambda ws, s: (["eval", ws.pristine.runs["ar"], "--mc_passes", 1, "--out", ws.path / "r"],
                                      ws.path / "r.csv"),
    "eval --out: JSON": lambda ws, s: (["eval", ws.pristine.runs["ar"], "--mc_passes", 1, "--out", ws.path / "r"],
                                       ws.path / "r.json"),
    "finetune eval --out (JSON)": lambda ws, s: (["finetune", "eval", ws.pristine.runs["ar"], "--per_task", 1,
                                                  "--length", 4, "--tasks", "reverse", "--out", ws.path / "e.json"],
                                                 ws.path / "e.json"),
    "sample --trace (JSONL)": lambda ws, s: (["sample", ws.pristine.runs["mdm"], "--length", 4, "--trace",
                                              ws.path / "t.jsonl"], ws.path / "t.jsonl"),
}  # fmt: skip


@pytest.mark.parametrize("case", ATOMIC.values(), ids=ATOMIC.keys())
def test_a_full_disk_under_every_atomic_writer_is_one_line_in_the_os_words(ws, capsys, study_dir, case):
    argv, target = case(ws, study_dir)
    if not tmp_of(target).is_symlink():
        full_at(tmp_of(target))
    if target.name == "results.parquet":
        pytest.importorskip("pyarrow")
    before = snapshot(ws.path)
    outcome = unmask(capsys, *argv)
    assert_disk_failure(outcome, NO_SPACE, target.name)
    assert_nothing_half_written(ws.path, before, target)


def test_a_refused_write_is_one_line_in_the_os_words(ws, capsys, study_dir, monkeypatch):
    """EACCES where the OS would say it (root passes permission bits, so the refusal is raised in its place)."""
    from unmask import checkpoint

    def denied(fd):
        raise PermissionError(errno.EACCES, DENIED)

    study = study_copy(ws, study_dir, full=True)
    monkeypatch.setattr(checkpoint.os, "fsync", denied)
    before = snapshot(ws.path)
    outcome = unmask(capsys, "study", "fit", study.config, "--n_boot", 0)
    assert_disk_failure(outcome, DENIED, "fit.json")
    assert_nothing_half_written(ws.path, before, study.out / "fit.json")


# ---------------------------------------------------------------------------------------------
# Training's writers: torch.save (checkpoints) and safetensors (weights)


def _train(ws: Workspace) -> list:
    return ["train", "--data", ws.pristine.data, "--out", ws.path / "run", "--model.size", "tiny",
            "--train.epochs", 1, "--train.batch_size", 16, "--tensorboard", "false"]  # fmt: skip


def torch_save_to_a_full_disk(monkeypatch) -> None:
    real = torch.save

    def save(obj, f, *args, **kwargs):  # the real writer, its bytes going to a full disk
        with open("/dev/full", "wb") as dev:
            real(obj, dev, *args, **kwargs)

    monkeypatch.setattr("unmask.checkpoint.torch.save", save)


def torch_save_refused(monkeypatch) -> None:
    def save(obj, f, *args, **kwargs):  # what torch's zip writer raises when the OS refuses its write
        try:
            raise PermissionError(errno.EACCES, DENIED)
        except PermissionError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr("unmask.checkpoint.torch.save", save)


def safetensors_to_a_full_disk(monkeypatch) -> None:
    """safetensors writes a temporary file and renames it (a link to /dev/full would be replaced, not written
    through), so its error on a full disk is raised in its place, word for word."""
    from safetensors import SafetensorError

    def save_file(state, path, *args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("unmask.model.save_file", save_file)


TRAINING = {
    "a checkpoint (torch.save), disk full": (torch_save_to_a_full_disk, NO_SPACE),
    "a checkpoint (torch.save), write refused": (torch_save_refused, DENIED),
    "the weights (safetensors), disk full": (safetensors_to_a_full_disk, NO_SPACE),
}


@pytest.mark.parametrize("case", TRAINING.values(), ids=TRAINING.keys())
def test_a_failed_write_while_training_names_the_os_cause(ws, capsys, monkeypatch, case):
    fail, reason = case
    fail(monkeypatch)
    outcome = unmask(capsys, *_train(ws))
    assert_disk_failure(outcome, reason, "could not save")
    assert not list((ws.path / "run").rglob("*.tmp")), "a temporary file was left behind"


def test_the_os_reason_is_found_whatever_the_writer_wrapped():
    from safetensors import SafetensorError

    from unmask.config import os_reason

    try:
        try:
            raise OSError(errno.ENOSPC, NO_SPACE)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
    except RuntimeError as torch_error:
        assert os_reason(torch_error) == NO_SPACE
    assert os_reason(SafetensorError("Error while serializing: I/O error: No space left (os error 28)")) == NO_SPACE
    assert os_reason(OSError(errno.EACCES, "Error writing bytes to file. Detail: [errno 13]")) == DENIED
    assert os_reason(ValueError("no cause")) is None


def test_a_full_disk_while_preparing_an_instruction_folder_leaves_no_folder(ws, capsys, monkeypatch):
    """The folder is written into a temporary sibling: a failed write removes it, and the line says why."""
    write_text = Path.write_text

    def full(path, *args, **kwargs):
        if path.parent.name.startswith(".f.tmp-"):
            raise OSError(errno.ENOSPC, NO_SPACE, str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    data = ws.path / "d.jsonl"
    data.write_bytes("".join(f'{{"prompt": "say {w}", "response": "{w} {w}"}}\n' for w in "abcdefgh").encode())
    outcome = unmask(capsys, "finetune", "prepare", ws.pristine.runs["mdm"], "--data", data, "--out", ws.path / "f")
    assert outcome.code == 2 and NO_SPACE in outcome.err and "nothing was written" in outcome.err, outcome.err
    assert not (ws.path / "f").exists() and not list(ws.path.glob(".f.tmp-*"))
