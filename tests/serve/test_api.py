"""The HTTP API: every endpoint, streaming, and each bad input answered by one clear 4xx line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.serve.conftest import httpx
from unmask.sampling import SamplerConfig
from unmask.sampling.text import decode


def events(response) -> list:
    """The data of each server-sent event ('[DONE]' kept as the string)."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream(client, path: str, body: dict) -> list:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return events(response)


# --- the read-only endpoints ------------------------------------------------------------------------


def test_health_and_models(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["tiny-ar", "tiny-mdm"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    cards = {m["id"]: m for m in models["data"]}
    assert cards["tiny-ar"]["decoder"] == "ar" and cards["tiny-mdm"]["decoder"] == "mdm"
    assert cards["tiny-mdm"]["seq_len"] == 32 and cards["tiny-mdm"]["parameters"] > 0


def test_openapi_schema_is_published_with_the_request_bodies(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/completions", "/v1/infill", "/v1/models", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "n", "stream"} <= set(body["properties"])
    assert {"method", "steps", "block_length", "threshold", "cache", "conv_kernel"} <= set(body["properties"])
    infill = schema["paths"]["/v1/infill"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"text", "blank_length", "mask_spans"} <= set(infill["properties"])


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# --- completions and infilling ----------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_completion_is_what_unmask_sample_decodes(client, serve_runs, objective):
    body = {"model": f"tiny-{objective}", "prompt": "She was", "max_tokens": 8, "temperature": 0}
    if objective == "mdm":
        body["steps"] = 4
    reply = client.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["object"] == "text_completion" and data["model"] == f"tiny-{objective}"
    (choice,) = data["choices"]
    sampler = SamplerConfig.from_flat(temperature=0.0, steps=4 if objective == "mdm" else None)
    gen = decode(serve_runs[objective], "She was", 1, 8, sampler)
    tokens = gen.output.tokens[0, gen.prompt_len :].tolist()
    tokens = tokens[: tokens.index(gen.eod_id)] if gen.eod_id in tokens else tokens
    from unmask.run import Run

    assert choice["text"] == Run(serve_runs[objective]).tokenizer().decode(tokens)
    assert choice["finish_reason"] in ("length", "stop")
    assert data["usage"]["prompt_tokens"] == gen.prompt_len
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]


def test_several_prompts_and_n_give_one_choice_each_in_order(client):
    body = {"model": "tiny-mdm", "prompt": ["She was", "It is a truth universally"], "n": 2, "max_tokens": 6}
    data = client.post("/v1/completions", json={**body, "temperature": 0, "steps": 3}).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert data["choices"][0]["text"] == data["choices"][1]["text"]  # argmax: the copies agree
    one = client.post("/v1/completions", json={**body, "prompt": body["prompt"][1], "n": 1, "temperature": 0,
                                               "steps": 3}).json()  # fmt: skip
    assert data["choices"][2]["text"] == one["choices"][0]["text"]  # padded in a batch = alone


def test_stop_strings_cut_the_text(client):
    body = {"model": "tiny-ar", "prompt": "She was", "max_tokens": 12, "temperature": 0}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    stop = full[3:5]
    cut = client.post("/v1/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert cut["text"] == full[: full.index(stop)] and cut["finish_reason"] == "stop"


def test_infill_fills_only_the_blanks(client):
    reply = client.post("/v1/infill", json={"model": "tiny-mdm", "text": "She ____ the ____.", "blank_length": 3,
                                             "temperature": 0})  # fmt: skip
    assert reply.status_code == 200, reply.text
    (choice,) = reply.json()["choices"]
    assert reply.json()["object"] == "infill" and len(choice["fills"]) == 2
    a, b = choice["fills"]
    assert choice["text"] == f"She {a} the {b}."  # every given token kept, the blanks filled
    spans = client.post("/v1/infill", json={"model": "tiny-mdm", "text": "She was not the one", "mask_spans": ["1-3"],
                                            "temperature": 0}).json()  # fmt: skip
    assert len(spans["choices"][0]["fills"]) == 1


# --- streaming ----------------------------------------------------------------------------------------


def test_mdm_stream_has_one_event_per_denoising_step(client):
    body = {"model": "tiny-mdm", "prompt": "She was", "max_tokens": 8, "temperature": 0, "steps": 4}
    chunks = stream(client, "/v1/completions", body)
    assert chunks[-1] == "[DONE]"
    start, *steps, done = chunks[:-1]
    assert start["unmask"]["event"] == "start" and done["unmask"]["event"] == "done"
    row = start["unmask"]["rows"][0]
    mask_id, P = start["unmask"]["mask_id"], row["prompt_len"]
    assert row["tokens"][P:] == [mask_id] * 8 and all(p is None for p in row["pieces"][P:])
    assert [s["unmask"]["step"] for s in steps] == [1, 2, 3, 4]
    committed = [p for s in steps for p in s["unmask"]["rows"][0]["positions"]]
    assert sorted(committed) == list(range(P, P + 8))  # each masked position committed exactly once
    canvas = list(row["tokens"])
    for s in steps:
        r = s["unmask"]["rows"][0]
        for p, t in zip(r["positions"], r["tokens"], strict=True):
            canvas[p] = t
    assert canvas == done["unmask"]["rows"][0]["tokens"]
    solo = client.post("/v1/completions", json=body).json()
    assert done["choices"][0]["text"] == solo["choices"][0]["text"]  # the stream's answer is the same answer
    assert all(c["object"] == "text_completion" and c["id"] == start["id"] for c in chunks[:-1])


def test_ar_stream_has_one_event_per_token_and_the_deltas_add_up(client):
    body = {"model": "tiny-ar", "prompt": "She was", "max_tokens": 10, "temperature": 0}
    chunks = stream(client, "/v1/completions", body)[:-1]
    steps = [c for c in chunks if c["unmask"]["event"] == "step"]
    assert 1 <= len(steps) <= 10
    assert all(len(s["unmask"]["rows"][0]["positions"]) == 1 for s in steps)
    positions = [s["unmask"]["rows"][0]["positions"][0] for s in steps]
    assert positions == list(range(positions[0], positions[0] + len(steps)))  # left to right
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == client.post("/v1/completions", json=body).json()["choices"][0]["text"]


def test_infill_stream(client):
    chunks = stream(client, "/v1/infill", {"model": "tiny-mdm", "text": "She ____ the", "blank_length": 4,
                                           "temperature": 0, "steps": 2})  # fmt: skip
    assert [c["unmask"]["event"] for c in chunks[:-1]] == ["start", "step", "step", "done"]


# --- bad input: one clear line each -------------------------------------------------------------------

GOOD = {"model": "tiny-mdm", "prompt": "She was", "max_tokens": 8}
BAD = [
    ({**GOOD, "model": "nope"}, 404, "unknown model 'nope'"),
    ({**GOOD, "method": "fastest"}, 400, "method='fastest': expected one of"),
    ({**GOOD, "steps": -3}, 400, "steps=-3: must be in"),
    ({**GOOD, "steps": 0}, 400, "steps=0"),
    ({**GOOD, "max_tokens": 25}, 400, "max_tokens=25: over the server's maximum of 24"),
    ({**GOOD, "max_tokens": -1}, 400, "max_tokens"),
    ({**GOOD, "prompt": "She was " * 20, "max_tokens": 20}, 400, "exceeds run tiny-mdm's seq_len 32"),
    ({**GOOD, "block_length": 3}, 400, "block_length=3 must divide the generation length 8"),
    ({**GOOD, "method": "threshold", "steps": 4}, 400, "steps: not used by method threshold"),
    ({**GOOD, "cfg_scale": 1.0, "cache": "dual"}, 400, "cfg_scale=1.0 with cache=dual"),
    ({**GOOD, "conv": True, "conv_kernel": 4}, 400, "conv_kernel=4: must be odd"),
    ({**GOOD, "temperature": -1}, 400, "temperature=-1"),
    ({**GOOD, "model": "tiny-ar", "block_length": 4}, 400, "block_length: MDM-only"),
    ({**GOOD, "n": 9}, 400, "over the server's max_batch 8"),
    ({**GOOD, "prompt": []}, 400, "non-empty list"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop: up to 4"),
    ({**GOOD, "max_tokens": "many"}, 400, "max_tokens='many'"),
    ({**GOOD, "temprature": 0.5}, 400, "unknown field 'temprature'"),
    ({"prompt": "x"}, 400, "model: required"),
]


@pytest.mark.parametrize("body, status, needle", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_completion_requests(client, body, status, needle):
    reply = client.post("/v1/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert needle in error["message"] and "\n" not in error["message"] and "Traceback" not in reply.text
    assert error["code"] == status


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b'{"model": "tiny-mdm", "prompt": "caf\xe9"}', "not valid UTF-8 (byte 36)"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"model": "tiny-mdm", "prompt": ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"model": "tiny-mdm", "temperature": NaN}', "not valid JSON: NaN is not JSON"),
        (b'["tiny-mdm"]', "must be a JSON object"),
        (b'{"model": "tiny-mdm", "prompt": "\\ud800"}', "prompt: not valid UTF-8 text"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_bodies_that_are_not_utf8_json_objects(client, raw, needle):
    reply = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert needle in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"model": "tiny-ar", "text": "She ____ it"}, 400, "infilling needs an MDM run"),
        ({"model": "tiny-mdm", "text": "no blanks here"}, 400, "nothing to infill"),
        ({"model": "tiny-mdm", "text": "She ____ it", "mask_spans": ["9-2"]}, 400, "mask_spans"),
        ({"model": "tiny-mdm", "text": "She ____ it", "blank_length": 40}, 400, "blank_length=40"),
        ({"model": "tiny-mdm", "text": "She ____ it", "block_length": 2}, 400, "block_length"),
    ],
)
def test_bad_infill_requests(client, body, status, needle):
    reply = client.post("/v1/infill", json=body)
    assert reply.status_code == status and needle in reply.json()["error"]["message"], reply.text


def test_unknown_endpoint_wrong_method_and_oversized_body(client):
    assert client.get("/v2/nothing").status_code == 404
    assert "no such endpoint" in client.get("/v2/nothing").json()["error"]["message"]
    assert client.get("/v1/completions").status_code == 405
    huge = client.post("/v1/completions", content=b" " * (2 << 20), headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "over the limit" in huge.json()["error"]["message"]


def test_bearer_token_guards_the_api_but_not_health(loaded):
    from tests.serve.conftest import start_server

    with start_server(loaded, token="s3cret-token", host="127.0.0.1") as url, httpx.Client(base_url=url) as c:
        assert c.get("/health").status_code == 200
        denied = c.get("/v1/models")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_non_loopback_binding_needs_a_token():
    from unmask.config import ConfigError
    from unmask.serve.config import ServeConfig, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert ServeConfig().host == "127.0.0.1"
    with pytest.raises(ConfigError, match="not loopback"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", token="long-enough-token")
    ServeConfig(host="0.0.0.0", insecure=True)


def test_runs_are_opened_read_only(serve_runs):
    from unmask.serve.engine import load_models

    files = sorted(p for name in ("ar", "mdm") for p in Path(serve_runs[name]).rglob("*"))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    models = load_models([serve_runs["ar"], serve_runs["mdm"]])
    assert all(isinstance(m.net, torch.nn.Module) and not m.net.training for m in models.values())
    assert sorted(p for name in ("ar", "mdm") for p in Path(serve_runs[name]).rglob("*")) == files
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files} == before


def test_two_runs_with_one_name_are_refused(serve_runs, tmp_path):
    import shutil

    from unmask.config import ConfigError
    from unmask.serve.engine import load_models

    twin = shutil.copytree(serve_runs["mdm"], tmp_path / "tiny-mdm")
    with pytest.raises(ConfigError, match="two runs are named 'tiny-mdm'"):
        load_models([serve_runs["mdm"], str(twin)])
