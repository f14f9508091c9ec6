"""Bad input to `unmask-lm-eval --model unmask`, as a class: every way --model_args can name no usable run, every
bad model argument, every damaged run folder. Each is one line `unmask: error: ...` and exit code 2, never lm-eval's
traceback.

lm-eval itself spends seconds indexing its tasks before it creates the model, so the quick cases stop lm-eval
there: its command line is replaced by what it does with `--model unmask` (create the model from the argument
string), the wrapper around it unchanged. One slow case runs the real entry point in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_input.contract import Outcome, Workspace, assert_contract, assert_unchanged
from tests.bad_input.test_numbers import LM_EVAL_ARGS
from tests.bad_input.test_run_dirs import RUN_DAMAGE, RUN_PATHS

pytest.importorskip("lm_eval")


@pytest.fixture
def lm_eval_stops_at_the_model(monkeypatch):
    """lm-eval's CLI, up to creating `--model unmask` from `--model_args` (as lm_eval.evaluator does)."""
    import lm_eval.__main__

    def create_model() -> None:
        from lm_eval.api.registry import get_model

        argv = sys.argv[1:]
        args = argv[argv.index("--model_args") + 1] if "--model_args" in argv else ""
        get_model("unmask").create_from_arg_string(args, {"batch_size": 1, "max_batch_size": None, "device": None})

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", create_model)


def unmask_lm_eval(capsys, *args: str) -> Outcome:
    from unmask.cli.lm_eval import main

    start = time.perf_counter()
    try:
        main(["--model", "unmask", *args, "--tasks", "lambada_openai"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, time.perf_counter() - start)


MODEL_ARGS: dict[str, Callable[[Workspace], str]] = {
    "none": lambda ws: "",
    "no run": lambda ws: "mc_samples=8",
    "run empty": lambda ws: "run=",
    "run without =": lambda ws: "run",
    "only commas": lambda ws: ",,,",
    **{f"run {label}": (lambda ws, where=where: f"run={where(ws)}") for label, where in RUN_PATHS.items()},
    **{f"an mdm run with {label}": (lambda ws, kwargs=kwargs: f"run={ws.pristine.runs['mdm']},"
                                    + ",".join(f"{k}={v}" for k, v in kwargs.items()))
       for label, kwargs in LM_EVAL_ARGS.items()},
    "batch_size in model_args": lambda ws: f"run={ws.pristine.runs['mdm']},batch_size=4",
    "max_batch_size in model_args": lambda ws: f"run={ws.pristine.runs['mdm']},max_batch_size=4",
}  # fmt: skip


@pytest.mark.parametrize("model_args", MODEL_ARGS.values(), ids=MODEL_ARGS.keys())
def test_every_bad_model_args_is_one_line(ws, capsys, lm_eval_stops_at_the_model, model_args):
    args = model_args(ws)
    before = ws.snapshot()
    outcome = unmask_lm_eval(capsys, "--model_args", args) if args else unmask_lm_eval(capsys)
    assert_contract(outcome, "refused", f"unmask-lm-eval --model_args {args}")
    assert_unchanged(before, ws.snapshot(), outcome)


LM_DAMAGE = {name: d for name, d in RUN_DAMAGE.items() if "lm-eval" in d.refused_by and not d.field}


@pytest.mark.parametrize("damage", LM_DAMAGE.values(), ids=LM_DAMAGE.keys())
def test_every_damaged_run_is_one_line_through_the_wrapper(ws, capsys, lm_eval_stops_at_the_model, damage):
    run = ws.run("mdm")
    damage.mutate(run)
    before = ws.snapshot()
    outcome = unmask_lm_eval(capsys, "--model_args", f"run={run}")
    assert_contract(outcome, "refused", "unmask-lm-eval")
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.slow
def test_the_real_entry_point_refuses_a_missing_run_before_indexing_tasks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "from unmask.cli.lm_eval import main; main()", "--model", "unmask",
         "--model_args", "run=DOES_NOT_EXIST", "--tasks", "lambada_openai"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    outcome = Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
    assert_contract(outcome, "refused", "unmask-lm-eval")
    assert "DOES_NOT_EXIST" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(Path(tmp_path).iterdir())
