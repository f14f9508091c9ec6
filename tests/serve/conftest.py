"""Tiny trained runs (AR and MDM, one tokenizer) and a live server on loopback for the serve tests."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="unmask serve needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests talk HTTP with httpx (the dev extra)")

from unmask.serve.app import BackgroundServer, create_app  # noqa: E402
from unmask.serve.config import ServeConfig  # noqa: E402
from unmask.serve.engine import load_models  # noqa: E402


@pytest.fixture(scope="session")
def serve_runs(trained_runs) -> dict[str, str]:
    """One epoch of a tiny AR and a tiny MDM run on the tiny data (seq_len 32): the session's trained_runs, served
    as tiny-ar and tiny-mdm (their folders' names)."""
    return {objective: str(path) for objective, path in trained_runs.runs.items()}


@pytest.fixture(scope="session")
def loaded(serve_runs):
    return load_models([serve_runs["ar"], serve_runs["mdm"]])


def start_server(loaded, **limits):
    """A server over the loaded runs with these ServeConfig limits: `with start_server(...) as url:`."""
    return BackgroundServer(create_app(loaded, ServeConfig(**limits)))


@pytest.fixture(scope="module")
def server(loaded):
    with start_server(loaded, max_tokens=24, timeout=30) as url:
        yield url


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


class SlowNet:
    """A run's network that takes `delay` seconds per forward pass: generations long enough to overlap."""

    def __init__(self, net, delay: float):
        self.net, self.delay, self.cfg = net, delay, net.cfg
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.delay)
        return self.net(*args, **kwargs)


def slow(loaded, delay: float) -> dict:
    """The loaded runs with networks slowed to `delay` seconds per forward pass."""
    return {name: dataclasses.replace(m, net=SlowNet(m.net, delay)) for name, m in loaded.items()}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots, load reports): $UNMASK_TEST_ARTIFACTS or
    test-artifacts/ at the repository root (git-ignored)."""
    path = Path(os.environ.get("UNMASK_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, apt-installed here when missing and we are root; else the test is skipped, saying why."""
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "apt-get install chromium")  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, env=env,
                          timeout=1200)  # fmt: skip
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              env=env, timeout=1200)  # fmt: skip
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"headless Chromium could not be installed (apt-get install chromium: {done.stderr[-300:]!r})")
    return found
