"""`unmask serve` on the command line: --help, one-line errors, light imports, a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from unmask import cli


def test_serve_help_and_light_imports():
    # the command table (and --help) never imports the server: `import unmask` stays light
    code = "import sys, unmask, unmask.cli, unmask.serve.config; unmask.cli.build_parser(); " \
           "sys.exit(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'starlette', 'torch')))"  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "at least one run directory"),
        (["/nonexistent/run"], "does not exist"),
        (["RUN", "--host", "0.0.0.0"], "not loopback"),
        (["RUN", "--max_batch", "0"], "max_batch=0"),
        (["RUN", "--port", "70000"], "port=70000"),
    ],
)
def test_serve_bad_input_is_one_line(capsys, serve_runs, args, needle):
    args = [serve_runs["mdm"] if a == "RUN" else a for a in args]
    code = cli.main(["serve", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("unmask: error: ") and needle in err[0], err


def test_serve_runs_a_server_until_stopped(serve_runs):
    env = {**os.environ, "UNMASK_SERVE_TOKEN": "a-token-from-env"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unmask", "serve", serve_runs["ar"], serve_runs["mdm"], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "tiny-ar (ar), tiny-mdm (mdm) on http://127.0.0.1:" in line, (line, proc.stderr.read())
        url = line.split(" on ")[1].split("/ ")[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                health = json.load(urllib.request.urlopen(url + "/health", timeout=5))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health["models"] == ["tiny-ar", "tiny-mdm"]
        request = urllib.request.Request(url + "/v1/models", headers={"Authorization": "Bearer a-token-from-env"})
        assert len(json.load(urllib.request.urlopen(request, timeout=5))["data"]) == 2
    finally:
        proc.terminate()  # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


@pytest.mark.parametrize("damage", ["config.json", "last.safetensors", "tokenizer.json"])
def test_serve_refuses_a_damaged_run_in_one_line(capsys, serve_runs, tmp_path, damage):
    import shutil

    run = shutil.copytree(serve_runs["mdm"], tmp_path / "damaged")
    (run / damage).write_bytes(b"\x00garbage")
    code = cli.main(["serve", str(run), serve_runs["ar"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("unmask: error: ") and "damaged" in err[0], err
