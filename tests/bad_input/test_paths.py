"""Output and input paths that cannot be used (a file where a folder goes, an existing run, a folder that is not
prepared data, a read-only folder): refused before any work, nothing created or changed."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.bad_input.contract import (
    Workspace,
    a_file,
    assert_contract,
    assert_unchanged,
    bench_sample_argv,
    empty_dir,
    not_a_run,
    prepare_argv,
    sample_argv,
    train_argv,
    unmask,
)

OUTPUTS: dict[str, Callable[[Workspace], list]] = {
    "train --out a file": lambda ws: train_argv(ws, a_file(ws)),
    "train --out below a file": lambda ws: train_argv(ws, a_file(ws) / "r"),
    "train --out an existing run": lambda ws: train_argv(ws, ws.run()),
    "train --out a non-empty folder": lambda ws: train_argv(ws, not_a_run(ws)),
    "train --data missing": lambda ws: train_argv(ws, ws.path / "r", ws.path / "nodata"),
    "train --data a file": lambda ws: train_argv(ws, ws.path / "r", a_file(ws)),
    "train --data a run": lambda ws: train_argv(ws, ws.path / "r", ws.run()),
    "train --data not prepared": lambda ws: train_argv(ws, ws.path / "r", not_a_run(ws)),
    "resume --out a file": lambda ws: ["train", "--out", a_file(ws), "--resume", "true"],
    "resume --out missing": lambda ws: ["train", "--out", ws.path / "none", "--resume", "true"],
    "prepare --out a file": lambda ws: prepare_argv(a_file(ws)),
    "prepare --out below a file": lambda ws: prepare_argv(a_file(ws) / "data"),
    "prepare --out a run": lambda ws: prepare_argv(ws.run()),
    "prepare --out a non-empty folder": lambda ws: prepare_argv(not_a_run(ws)),
    "prepare --out the current folder": lambda ws: prepare_argv("."),
    "prepare input missing": lambda ws: prepare_argv(ws.path / "d", ws.path / "nope.txt"),
    "prepare input a folder of nothing": lambda ws: prepare_argv(ws.path / "d", empty_dir(ws)),
    "eval --out below a file": lambda ws: ["eval", ws.run(), "--mc_passes", 1, "--out", a_file(ws) / "result"],
    "sample --trace below a file": lambda ws: sample_argv(ws.run(), "--trace", a_file(ws) / "t.jsonl"),
    "sample --trace a folder": lambda ws: sample_argv(ws.run(), "--trace", empty_dir(ws)),
    "sample --trace in a missing folder": lambda ws: sample_argv(ws.run(), "--trace", ws.path / "nowhere" / "t.jsonl"),
    "sample --energy_run missing": lambda ws: sample_argv(
        ws.run("mdm"), "--sampler.method", "ancestral", "--sampler.temperature", 1, "--energy_run", ws.path / "no"
    ),
    "sample --judge_run a file": lambda ws: sample_argv(ws.run(), "--metrics", "true", "--judge_run", a_file(ws)),
    "bench sample --json below a file": lambda ws: bench_sample_argv(ws.run("mdm"), "--json", a_file(ws) / "b.json"),
    "bench sample --json a folder": lambda ws: bench_sample_argv(ws.run("mdm"), "--json", empty_dir(ws)),
    "bench sample --run missing": lambda ws: bench_sample_argv(ws.path / "missing"),
    "bench sample --run a file": lambda ws: bench_sample_argv(a_file(ws)),
}
"""Commands whose output path cannot be written, or whose input path is not what it must be."""


@pytest.mark.parametrize("argv", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_an_output_or_input_path_that_cannot_be_used_is_refused_before_any_work(ws, capsys, argv):
    args = argv(ws)
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "refused", " ".join(map(str, args[:2])))
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: permission bits do not stop root, nothing to test")
def test_a_read_only_output_folder_is_refused(ws, capsys):
    run, locked = ws.run(), empty_dir(ws)
    locked.chmod(0o500)
    try:
        before = ws.snapshot()
        for args in (
            prepare_argv(locked / "data"),
            train_argv(ws, locked / "run"),
            ["eval", run, "--mc_passes", 1, "--out", locked / "result"],
            sample_argv(run, "--trace", locked / "trace.jsonl"),
        ):
            outcome = unmask(capsys, *args)
            assert_contract(outcome, "refused", str(args[0]))
            assert_unchanged(before, ws.snapshot(), outcome)
    finally:
        locked.chmod(0o700)
