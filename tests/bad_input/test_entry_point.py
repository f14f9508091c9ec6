"""The real entry point, `python -m unmask`, in its own process, on a few representative cases: one line on stderr,
exit code 2, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.bad_input.contract import GARBAGE, Outcome, assert_contract, assert_unchanged
from tests.bad_input.test_input_files import task_line

# ---------------------------------------------------------------------------------------------
# The real entry point, in its own process, on a few representative cases


def test_python_m_unmask_keeps_the_contract_in_its_own_process(ws):
    garbage = ws.run()
    (garbage / "config.json").write_bytes(GARBAGE)
    ws.tasks.write_bytes(task_line(label=1.5))
    cases = {  # one per catalogue that reaches different code: run reader, sampler bounds, task reader, parser
        "damaged config.json": ["sample", garbage],
        "length beyond the model": ["sample", ws.pristine.runs["mdm"], "--length", 10**12],
        "bad task file": ["eval", ws.pristine.runs["ar"], "--tasks", ws.tasks, "--validation", "false"],
        "unknown option": ["sample", ws.pristine.runs["ar"], "--lenght", 4],
    }
    before = ws.snapshot()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("UNMASK_DEBUG", None)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "unmask", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ws.path,
        )  # fmt: skip
        for name, args in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert_contract(Outcome(proc.returncode, out, err, 0.0), "refused", name)
        assert len(err.strip().splitlines()) == 1, (name, err)
    assert_unchanged(before, ws.snapshot(), Outcome(2, "", "", 0.0))
