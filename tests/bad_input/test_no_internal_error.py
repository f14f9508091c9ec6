"""No bad input, anywhere in the bad-input suites, is answered with an internal error.

Every case of tests/bad_input/ and tests/serve/test_bad_requests.py runs inside
`internal_errors_fail` (an autouse fixture): any line cli.main prints as "internal error ... (a bug)" fails the case,
even one whose own assertions would accept the exit code. Here: the guard itself is shown to catch one, and (slow)
the whole quick suite runs in its own process and no "internal error" appears anywhere in its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input.contract import INTERNAL, PRINT_ERROR, internal_errors_fail
from unmask import cli
from unmask.cli.parser import Command

SUITES = ["tests/bad_input", "tests/serve/test_bad_requests.py"]


def test_the_guard_fails_a_case_whose_command_reported_an_internal_error(monkeypatch, capsys):
    def a_bug(**kwargs):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setitem(cli.COMMANDS, "bench", Command(a_bug))
    monkeypatch.setattr(cli, "print_error", PRINT_ERROR)  # this case's own guard only: the bug is deliberate
    monkeypatch.delenv("UNMASK_DEBUG", raising=False)
    with pytest.raises(AssertionError, match="internal error ZeroDivisionError"):
        with internal_errors_fail(monkeypatch):
            assert cli.main(["bench", "memory"]) == 1
    assert INTERNAL in capsys.readouterr().err


def test_the_guard_lets_a_refusal_through(monkeypatch, capsys):
    with internal_errors_fail(monkeypatch) as shown:
        assert cli.main(["sample", "/nonexistent/run"]) == 2
    assert len(shown) == 1 and "does not exist" in shown[0]


@pytest.mark.slow
def test_the_whole_quick_bad_input_suite_never_reports_an_internal_error():
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("UNMASK_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rA", *SUITES],
        capture_output=True, text=True, cwd=root, env=env, timeout=3600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert INTERNAL not in output, output[output.index(INTERNAL) - 500 :][:1500]
