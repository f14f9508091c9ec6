"""Bad input to `unmask serve`, as a class: every request field x every kind of wrong value, fuzzed bodies, and
every damaged run folder (tests/bad_input/test_run_dirs.py's catalogue) given to the server to load.

A request is answered (200) or refused with one line and a 4xx status, quickly, never a 500 or an internal
error; the server keeps serving. A run folder is loaded or refused with `unmask: error: ...` and exit code 2.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.bad_input.contract import (
    QUICK,
    _one_parser,  # noqa: F401
    assert_contract,
    no_internal_error,  # noqa: F401
    unmask,
)
from tests.bad_input.test_run_dirs import FILE_DAMAGE, RUN_DAMAGE
from unmask.run import RUN_FILES
from unmask.serve.schemas import CompletionRequest, InfillRequest


@pytest.fixture(scope="module")
def client(loaded):
    """The app in-process (ASGI, no socket: a request costs what the server does, not loopback's delayed ACKs)."""
    from fastapi.testclient import TestClient

    from unmask.serve.app import create_app
    from unmask.serve.config import ServeConfig

    with TestClient(create_app(loaded, ServeConfig(max_tokens=24, timeout=30))) as c:
        yield c


COMPLETION = {"model": "tiny-mdm", "prompt": "She was", "max_tokens": 8}
INFILL = {"model": "tiny-mdm", "text": "She ____ it"}
AR = {"model": "tiny-ar", "prompt": "She was", "max_tokens": 8}

WRONG_TYPE = {"a string": "x", "a list": [1], "an object": {"a": 1}, "true": True}
NUMBER_WRONG = {"a string": "x", "a list": [1], "an object": {"a": 1}}
BEYOND = {"10**9+1": 10**9 + 1, "10**12+1": 10**12 + 1, "2**63-1": 2**63 - 1, "2**64+1": 2**64 + 1, "-1": -1}
SIZES = ("max_tokens", "n", "steps", "block_length", "conv_kernel", "blank_length")
"""Size-like fields: every value beyond the run or the server is refused before decoding."""


WRONG = {
    "int": WRONG_TYPE | {"1.5": 1.5, "a numeric string": "3"},
    "float": NUMBER_WRONG | {"true": True},
    "bool": {"a list": [1], "an object": {}, "a number": 1},
    "str": {"a number": 3, "an object": {"a": 1}},
    "list": {"a number": 3, "an object": {}},
}
"""Values of the wrong JSON type for a field of each kind."""


def _kind(model: type, name: str) -> str:
    text = str(model.model_fields[name].annotation)
    return next((k for k in ("bool", "int", "float", "list", "str") if k in text), "str")


def request_catalogue() -> dict[str, list[tuple[str, str, dict, bool]]]:
    """field (or topic): [(value's label, endpoint, body, must it be refused)], one test per field."""
    cases: dict[str, list[tuple[str, str, dict, bool]]] = {}
    for endpoint, model, good in (("completions", CompletionRequest, COMPLETION), ("infill", InfillRequest, INFILL)):
        for name in model.model_fields:
            if name in ("user", "stream"):
                continue
            field = cases.setdefault(f"{endpoint} {name}", [])
            for label, value in WRONG[_kind(model, name)].items():
                field.append((label, endpoint, {**good, name: value}, True))
            if name in SIZES:
                extra = {"conv": True} if name == "conv_kernel" else {}
                field += [(label, endpoint, {**good, **extra, name: value}, True) for label, value in BEYOND.items()]
            if name == "seed":
                field += [(str(v), endpoint, {**good, "seed": v}, True) for v in (-1, 2**63, 2**64 + 1)]
            for label, value in {"null": None, "0": 0, "an empty string": "", "1e999 (inf)": float("inf")}.items():
                field.append((f"{label} (may be legal)", endpoint, {**good, name: value}, False))
        cases[f"{endpoint} without model"] = [("", endpoint, {k: v for k, v in good.items() if k != "model"}, True)]
    cases["requests beyond what the run does"] = [
        ("an AR run with an MDM option", "completions", {**AR, "steps": 4}, True),
        ("top_k beyond the vocabulary", "completions", {**COMPLETION, "top_k": 10**12}, False),
        ("mask_spans beyond the prompt", "completions", {**COMPLETION, "mask_spans": ["0-9"]}, True),
        ("mask_spans 0-10**12", "infill", {**INFILL, "mask_spans": ["0-1000000000000"]}, True),
        ("mask_spans a number", "infill", {**INFILL, "mask_spans": [3]}, True),
    ]
    return cases


def _body(value) -> bytes:
    return json.dumps(value, allow_nan=True).replace("Infinity", "1e999").encode()


def assert_answered_or_refused(reply, must_refuse: bool, seconds: float) -> None:
    shown = f"{reply.status_code}: {reply.text[:300]}"
    assert reply.status_code in ((400, 404) if must_refuse else (200, 400, 404)), shown
    assert "Traceback" not in reply.text and "internal error" not in reply.text, shown
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert error["message"] and "\n" not in error["message"] and error["code"] == reply.status_code, shown
    assert seconds < QUICK, f"{seconds:.1f} s: {shown}"


REQUESTS = request_catalogue()


@pytest.mark.parametrize("values", REQUESTS.values(), ids=REQUESTS.keys())
def test_every_bad_value_of_every_request_field_is_refused_in_one_line(client, values):
    broken = []
    for label, endpoint, body, must_refuse in values:
        start = time.perf_counter()
        reply = client.post(f"/v1/{endpoint}", content=_body(body), headers={"content-type": "application/json"})
        try:
            assert_answered_or_refused(reply, must_refuse, time.perf_counter() - start)
        except AssertionError as e:
            broken.append(f"[{label}] {e}")
    assert not broken, "\n".join(broken)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=2),
    max_leaves=5,
)
plausible = {
    "prompt": st.text(max_size=20) | st.lists(st.text(max_size=8), max_size=3), "text": st.just("She ____ it"),
    "max_tokens": st.integers(-2, 40), "n": st.integers(-1, 10), "steps": st.integers(-1, 40) | st.none(),
    "block_length": st.integers(-1, 40) | st.none(), "method": st.sampled_from(["low_confidence", "threshold", "x"]),
    "temperature": st.floats(-1, 3), "top_k": st.integers(-1, 10**6), "top_p": st.floats(-0.5, 1.5),
    "conv": st.booleans(), "conv_kernel": st.integers(-1, 200), "blank_length": st.integers(-1, 40),
    "cache": st.sampled_from(["none", "prefix", "dual", "x"]), "seed": st.integers(-1, 2**64),
    "mask_spans": st.lists(st.text(max_size=6), max_size=2), "stop": st.text(max_size=4) | st.none(),
}  # fmt: skip
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny-ar", "tiny-mdm", "nope"])},
    optional={key: strategy | json_values for key, strategy in plausible.items()},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, endpoint=st.sampled_from(["completions", "infill"]))
def test_fuzzed_requests_are_answered_or_refused_never_a_server_error(client, body, endpoint):
    start = time.perf_counter()
    reply = client.post(f"/v1/{endpoint}", content=_body(body), headers={"content-type": "application/json"})
    event(str(reply.status_code))
    assert_answered_or_refused(reply, False, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Damaged run folders given to `unmask serve` (loaded, then the server would start: here it does not)


@pytest.fixture
def no_listening(monkeypatch):
    """`unmask serve` up to the point where it would listen: a run that loads makes it return at once."""
    import uvicorn

    from unmask.serve import app

    monkeypatch.setattr(app, "listen", lambda host, port: _FakeSocket())
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)


class _FakeSocket:
    def getsockname(self):
        return ("127.0.0.1", 0)


SERVE_DAMAGE = {name: d for name, d in RUN_DAMAGE.items() if not d.field}
"""Every file of a run x every kind of damage, and every damaged key (a config field's values:
tests/bad_input/test_run_dirs.py)."""


QUICK_DAMAGE = {f"{name}:{how}" for name in RUN_FILES for how in FILE_DAMAGE}
"""Every file x every kind of damage in the quick run; the damaged keys and values (read by the same Run as sample
and lm-eval, which take them in the quick run of tests/bad_input/test_run_dirs.py) in the slow run."""


@pytest.mark.parametrize(
    "damage",
    [pytest.param(d, id=n, marks=[] if n in QUICK_DAMAGE else [pytest.mark.slow]) for n, d in SERVE_DAMAGE.items()],
)
def test_serve_refuses_every_damaged_run_in_one_line(capsys, serve_runs, tmp_path, no_listening, damage):
    run = shutil.copytree(serve_runs["mdm"], tmp_path / "damaged")
    damage.mutate(run)
    outcome = unmask(capsys, "serve", run, "--port", 0)
    assert_contract(outcome, "refused" if "sample" in damage.refused_by else "either", "serve")  # it reads what sample
    # reads: the config, the tokenizer, the final weights


def test_a_request_with_an_out_of_range_seed_is_refused_before_the_engine(client):
    reply = client.post("/v1/completions", json={**COMPLETION, "seed": 2**64})
    assert reply.status_code == 400 and "seed" in reply.json()["error"]["message"]
    assert client.post("/v1/completions", json={**COMPLETION, "seed": 7}).status_code == 200  # still serving


def test_the_serve_command_keeps_the_contract(capsys, serve_runs, no_listening):
    outcome = unmask(capsys, "serve", serve_runs["mdm"], "--max_tokens", 10**12)
    assert_contract(outcome, "refused", "serve")
