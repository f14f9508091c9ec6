"""Malformed --tasks and --text files: every way a task line or a text file can be wrong, refused in one line by
`eval` on an AR and an MDM run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_input.contract import DROP, Workspace, assert_contract, assert_unchanged, unmask

# ---------------------------------------------------------------------------------------------
# Catalogue 4: malformed --tasks and --text files

GOOD_ITEM = {"context": "She was", "choices": ["happy.", "sad."], "label": 0}


def task_line(**changes) -> bytes:
    item = {k: v for k, v in {**GOOD_ITEM, **changes}.items() if v is not DROP}
    return (json.dumps(item) + "\n").encode()


def task_catalogue() -> dict[str, bytes]:
    cases = {
        "an empty file": b"",
        "blank lines only": b"\n \n\n",
        "not UTF-8": b'{"context": "caf\xe9", "choices": ["a", "b"], "label": 0}\n',
        "not JSON": b"{context: She was}\n",
        "truncated JSON": task_line()[:20],
        "JSON a list": b'["She was", ["happy.", "sad."], 0]\n',
        "JSON a string": b'"She was"\n',
        "JSON null": b"null\n",
        "a good line then a bad one": task_line() + b"{\n",
        "nested too deep": b"[" * 100_000 + b"\n",
        "a 5000-digit label": b'{"context": "a", "choices": ["b", "c"], "label": ' + b"9" * 5000 + b"}\n",
    }
    for key in GOOD_ITEM:
        cases[f"no {key}"] = task_line(**{key: DROP})
    for label, value in {"a number": 3, "null": None, "a list": ["She"], "an object": {}}.items():
        cases[f"context={label}"] = task_line(context=value)
    for label, value in {"a string": "happy. sad.", "a list of one": ["happy."], "empty": [], "numbers": [1, 2],
                         "with null": ["happy.", None], "with an empty string": ["happy.", ""],
                         "an object": {"a": "happy."}, "nested lists": [["happy."], ["sad."]]}.items():  # fmt: skip
        cases[f"choices={label}"] = task_line(choices=value)
    for label, value in {"a string": "0", "a float": 0.0, "1.5": 1.5, "true": True, "a list": [0], "-1": -1,
                         "= len(choices)": 2, "huge": 10**12, "null": None, "an object": {}}.items():  # fmt: skip
        cases[f"label={label}"] = task_line(label=value)
    cases["gold_text not a choice"] = task_line(label=DROP, gold_text="angry.")
    cases["gold_text disagrees with label"] = task_line(label=0, gold_text="sad.")
    cases["gold_text a number"] = task_line(label=DROP, gold_text=3)
    cases["gold_text a list"] = task_line(label=DROP, gold_text=["happy."])
    cases["gold_text null, no label"] = task_line(label=DROP, gold_text=None)
    cases["a choice longer than the model"] = task_line(choices=["happy " * 200, "sad."])
    return cases


TASK_FILES = task_catalogue()


@pytest.mark.parametrize("objective", ["ar", "mdm"])
@pytest.mark.parametrize("content", TASK_FILES.values(), ids=TASK_FILES.keys())
def test_every_malformed_task_file_is_refused(ws, capsys, content, objective):
    ws.tasks.write_bytes(content)
    before = ws.snapshot()
    args = ["--tasks", ws.tasks, "--validation", "false", "--likelihood.mc_samples", 2]
    outcome = unmask(capsys, "eval", ws.pristine.runs[objective], *args)
    assert_contract(outcome, "refused", "eval --tasks")
    assert_unchanged(before, ws.snapshot(), outcome)


def _text_dir(ws: Workspace) -> Path:
    ws.text.unlink()
    ws.text.mkdir()
    return ws.text


TEXT_FILES: dict[str, Callable[[Workspace], list]] = {
    "missing": lambda ws: [ws.path / "missing.txt"],
    "a directory": lambda ws: [_text_dir(ws)],
    "not UTF-8": lambda ws: [ws.text.write_bytes(b"caf\xe9 au lait\n" * 20) and ws.text],
    "empty": lambda ws: [ws.text.write_bytes(b"") or ws.text],
    "one good, one missing": lambda ws: [ws.text, ws.path / "missing.txt"],
    "below a file": lambda ws: [ws.text / "x.txt"],
}


@pytest.mark.parametrize("objective", ["ar", "mdm"])
@pytest.mark.parametrize("files", TEXT_FILES.values(), ids=TEXT_FILES.keys())
def test_every_malformed_text_file_is_refused(ws, capsys, files, objective):
    paths = files(ws)
    before = ws.snapshot()
    outcome = unmask(capsys, "eval", ws.pristine.runs[objective], "--mc_passes", 1, "--text", *paths)
    assert_contract(outcome, "refused", "eval --text")
    assert_unchanged(before, ws.snapshot(), outcome)
