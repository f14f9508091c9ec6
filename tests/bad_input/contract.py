"""The bad-input contract, and the harness every bad-input catalogue shares.

The promise (README, docs/reliability.md): every bad input ends in one line on stderr starting
"unmask: error: ", exit code 2, no traceback, and nothing created or changed on disk. The cases
are generated, not picked: every file of a run directory x every kind of damage, every config
field x every kind of wrong value, every numeric option x every out-of-range value, every way a
task or text file can be malformed; each goes through every command that reads it (`sample`,
`eval` on validation / `--text` / `--tasks`, `train --resume true`, lm-eval's `UnmaskLM`).

Some damage is legitimately no error for some commands (`sample` reads neither metrics.jsonl nor
provenance.json; a resumed run repairs its own last weights). There the command may succeed
instead, but it never shows a traceback or an internal error, and it changes nothing it does
not own (a read-only command: nothing at all).

Here: running a command and checking the contract, snapshots of what is on disk, the internal-error guard
(`no_internal_error`, autouse in every bad-input suite), a case's workspace (`ws`), and the command lines and
inputs several catalogues build on. The tiny AR and MDM runs are the session's (`trained_runs`, tests/conftest.py);
each case damages its own copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TinyRuns, tiny_train_config
from unmask import cli
from unmask.config import TRAIN_GROUPS, ConfigError, ModelConfig

TASKS = Path(__file__).parents[1] / "fixtures" / "austen_mc.jsonl"
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune.\n"
SECONDS = 30
"""No case may run longer: past it the case is stopped and fails as a hang."""
QUICK = 5
"""A request far beyond any bound must be refused within this many seconds (before allocating)."""
HASHED_BYTES = 1 << 20
"""Snapshots hash files up to this size; larger ones (weights, checkpoints) by size and mtime."""
INTERNAL = "internal error"
"""What cli.main says of an exception nobody raised on purpose: a bug, never an answer to bad input."""

# ---------------------------------------------------------------------------------------------
# Running a command and checking the contract


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float


class Hung(BaseException):
    """Raised by the alarm in a case that runs past SECONDS (a BaseException: cli.main lets it through)."""


def unmask(capsys, *args) -> Outcome:
    """`unmask ARGS` in-process, stopped as a hang after SECONDS."""

    def alarm(signum, frame):
        raise Hung(f"unmask {' '.join(map(str, args))} ran past {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    start = time.perf_counter()
    try:
        code = cli.main([str(a) for a in args])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, seconds)


def unmask_lm(run) -> Outcome:
    """lm-eval's entry point, `UnmaskLM(run=...)`: it raises ConfigError itself (shown as the CLI would)."""
    from unmask.lm_eval import UnmaskLM

    start = time.perf_counter()
    try:
        UnmaskLM(run=str(run), device="cpu")
    except ConfigError as e:
        return Outcome(2, "", f"unmask: error: {e}\n", time.perf_counter() - start)
    return Outcome(0, "", "", time.perf_counter() - start)


def assert_contract(outcome: Outcome, expect: str, what: str) -> None:
    """expect 'refused': exit 2 with exactly one line `unmask: error: ...` (warnings before it allowed);
    'either': that, or success. Never a traceback, never an internal error, never another exit code."""
    shown = f"{what}: exit {outcome.code}\nstderr: {outcome.err[-2000:]}"
    assert "Traceback" not in outcome.err + outcome.out, shown
    assert INTERNAL not in outcome.err + outcome.out, shown
    assert outcome.code in ((2,) if expect == "refused" else (0, 2)), shown
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("unmask: error: ")]
    if outcome.code == 2:
        assert len(errors) == 1 and lines[-1] == errors[0], shown
        assert all(line.startswith("unmask: warning: ") for line in lines[:-1]), shown
    else:
        assert not errors, shown


# ---------------------------------------------------------------------------------------------
# Snapshots: nothing created or changed


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under the roots (hidden ones too) with its kind, size, mtime and (small files) SHA-256."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder, name)
                st = p.lstat()
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p))
                elif p.is_dir():
                    out[str(p)] = ("dir",)
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size <= HASHED_BYTES else None
                    out[str(p)] = ("file", st.st_size, st.st_mtime_ns, digest)
    return out


def changes(before: dict, after: dict) -> list[str]:
    return sorted(
        [f"created {p}" for p in after.keys() - before.keys()]
        + [f"removed {p}" for p in before.keys() - after.keys()]
        + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )


def assert_unchanged(before: dict, after: dict, outcome: Outcome, owned: Path | None = None) -> None:
    """A refusal changes nothing; a success changes nothing outside `owned` (what the command writes).

    One exception, for a resumed run (`owned`): a refusal may have taken the writer lock first (checkpoints
    are verified under it, so no other writer changes them meanwhile); its .lock then holds this PID.
    """
    diff = changes(before, after)
    if owned is not None:
        lock = f"changed {owned / '.lock'}"
        diff = [
            d for d in diff if d != lock and (outcome.code != 0 or not Path(d.split(" ", 1)[1]).is_relative_to(owned))
        ]
    assert not diff, f"exit {outcome.code}; {diff[:8]}; stderr: {outcome.err[-500:]}"


# ---------------------------------------------------------------------------------------------
# The session's tiny AR and MDM runs (tests/conftest.py: trained_runs); each case damages its own copy

TRAINED = {
    "train": tiny_train_config(objective="ar", epochs=1),
    "model": ModelConfig(size="tiny", vocab_size=384, seq_len=32),
}
"""The settings the AR run is trained with (`pristine`, tests/bad_input/conftest.py, checks them)."""
TRAINED |= {f"train.{group}": getattr(TRAINED["train"], group) for group in TRAIN_GROUPS}  # each group's own settings


PRINT_ERROR = cli.print_error
"""cli.main's error printer as the package defines it (internal_errors_fail wraps it)."""


@contextlib.contextmanager
def internal_errors_fail(monkeypatch):
    """Every line cli.main prints as an error is recorded; if one reports an internal error, leaving the block
    fails, whether or not the case itself looked at the output."""
    shown: list[str] = []
    print_error = cli.print_error
    monkeypatch.setattr(cli, "print_error", lambda message: (shown.append(str(message)), print_error(message)))
    yield shown
    bugs = [line for line in shown if line.startswith(INTERNAL)]
    assert not bugs, f"a command reported an internal error (a bug): {bugs[0][:300]}"


@pytest.fixture(autouse=True)
def no_internal_error(monkeypatch):
    """Every case of the bad-input suites runs inside internal_errors_fail."""
    with internal_errors_fail(monkeypatch) as shown:
        yield shown


@pytest.fixture(scope="module", autouse=True)
def _one_parser():
    """cli.main builds its parser per call; the module's hundreds of calls share one (the subprocess
    cases in test_entry_point.py run the real entry point)."""
    parser = cli.build_parser()
    patch = pytest.MonkeyPatch()
    patch.setattr(cli, "build_parser", lambda: parser)
    yield
    patch.undo()


@dataclass
class Workspace:
    """A case's own folder (the current directory): inputs, a copy of a run, and the shared pristine runs."""

    path: Path
    pristine: TinyRuns
    text: Path
    tasks: Path
    also: tuple[Path, ...] = ()
    """More shared folders the case's snapshots cover (test_finetune.py: the instruction folders, the SFT run)."""

    def run(self, objective: str = "ar") -> Path:
        return Path(shutil.copytree(self.pristine.runs[objective], self.path / "run"))

    def snapshot(self) -> dict:
        return snapshot(self.path, self.pristine.root, *self.also)


@pytest.fixture
def ws(pristine, tmp_path, monkeypatch) -> Workspace:
    monkeypatch.chdir(tmp_path)  # a relative path a command might write lands in the snapshot
    (tmp_path / "text.txt").write_text(TEXT)
    tasks = Path(shutil.copyfile(TASKS, tmp_path / "tasks.jsonl"))
    yield Workspace(tmp_path, pristine, tmp_path / "text.txt", tasks)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)  # hundreds of copies: keep the disk small


# ---------------------------------------------------------------------------------------------
# Inputs and command lines the catalogues share

GARBAGE = random.Random(0).randbytes(777)

DROP = object()
"""A key to leave out (of a task line, a tokenizer)."""


def a_file(ws: Workspace) -> Path:
    (ws.path / "a_file").write_text("not a run\n")
    return ws.path / "a_file"


def not_a_run(ws: Workspace) -> Path:
    (ws.path / "not_a_run").mkdir()
    (ws.path / "not_a_run" / "notes.txt").write_text("hello\n")
    return ws.path / "not_a_run"


def empty_dir(ws: Workspace) -> Path:
    (ws.path / "empty").mkdir()
    return ws.path / "empty"


TINY_TRAIN = ["--model.size", "tiny", "--train.epochs", 1, "--train.batch_size", 48, "--train.eval.every", 100]
TINY_TRAIN += ["--tensorboard", "false"]
TINY_PREPARE = ["--data.unique_tokens", 3000, "--data.val_tokens", 1000, "--data.vocab_size", 384]
TINY_PREPARE += ["--data.seq_len", 32, "--data.tokenizer_train_bytes", 400_000]
TINY_BENCH = ["--steps", 1, "--size", "tiny", "--batch_size", 2, "--seq_len", 8, "--vocab_size", 300, "--repeats", 1]
"""Legal settings that keep a command that succeeds to a fraction of a second."""


def train_argv(ws: Workspace, out: Path, data: Path | None = None) -> list:
    return ["train", "--data", data or ws.pristine.data, "--out", out, *TINY_TRAIN]


def prepare_argv(out, *inputs) -> list:
    return ["prepare", *inputs, "--out", out, *TINY_PREPARE]


def sample_argv(run: Path, *more) -> list:
    return ["sample", run, "--length", 4, *more]


def bench_sample_argv(run: Path, *more) -> list:
    return ["bench", "sample", "--run", run, "--length", 8, "--samples", 1, "--methods", "low_confidence", *more]


KNOWN_BUGS: dict[str, str] = {}
"""Cases that break the contract, marked here while a fix is pending (expected to fail, strictly)."""
HANGS: dict[str, str] = {}
"""Known bugs that hang, marked here while a fix is pending: not run (each would take the whole SECONDS)."""


def marked(case_id: str, values, slow: Collection[str] = ()) -> object:
    """A parametrised case `case_id`, marked slow if in `slow`, and as a known bug or hang if listed above."""
    marks = [pytest.mark.slow] if case_id in slow else []
    if case_id in HANGS:
        marks.append(pytest.mark.xfail(run=False, reason=HANGS[case_id]))
    elif case_id in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case_id]))
    return pytest.param(values, marks=marks, id=case_id)
