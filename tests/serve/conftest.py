"""Tiny trained runs (AR and MDM, one tokenizer) and a live server on loopback for the serve tests."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="unmask serve needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests talk HTTP with httpx (the dev extra)")

from tests.conftest import tiny_model_config, tiny_train_config  # noqa: E402
from unmask.serve.app import BackgroundServer, create_app  # noqa: E402
from unmask.serve.config import ServeConfig  # noqa: E402
from unmask.serve.engine import load_models  # noqa: E402


@pytest.fixture(scope="session")
def serve_runs(tiny_data, tmp_path_factory) -> dict[str, str]:
    """One epoch of a tiny AR and a tiny MDM run on the tiny data (seq_len 32)."""
    import torch

    from unmask.training import train

    root = tmp_path_factory.mktemp("serve_runs")
    runs = {}
    for objective in ("ar", "mdm"):
        torch.manual_seed(0)
        model = tiny_model_config(tiny_data, causal=objective == "ar")
        train(tiny_data.path, root / f"tiny-{objective}", model, tiny_train_config(objective=objective, epochs=1),
              quiet=True, tensorboard=False)  # fmt: skip
        runs[objective] = str(root / f"tiny-{objective}")
    return runs


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
