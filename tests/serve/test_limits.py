"""Limits: a bounded queue (429 / 503 with Retry-After), a time limit, freed slots, and dynamic batching."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.serve.conftest import httpx, slow, start_server


def post_in_thread(url: str, body: dict, results: list) -> threading.Thread:
    def go():
        with httpx.Client(base_url=url, timeout=60) as c:
            reply = c.post("/v1/completions", json=body)
            results.append(reply)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


LONG = {"model": "tiny-mdm", "prompt": "She", "max_tokens": 16, "temperature": 0}  # 16 steps


def test_a_full_queue_answers_429_with_retry_after(loaded):
    with start_server(slow(loaded, 0.05), max_batch=1, max_queue=1, batch_window_ms=0) as url:
        c = httpx.Client(base_url=url, timeout=60)
        results: list = []
        first = post_in_thread(url, {**LONG, "seed": 1}, results)  # decoding (its own seed: its own batch)
        wait_for(lambda: c.get("/health").json()["decoding"] == 1)
        second = post_in_thread(url, {**LONG, "seed": 2}, results)  # waiting
        wait_for(lambda: c.get("/health").json()["waiting"] == 1)
        refused = c.post("/v1/completions", json=LONG)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many requests" in refused.json()["error"]["message"]
        first.join(30)
        second.join(30)
        assert [r.status_code for r in results] == [200, 200]  # the admitted ones are answered


def test_time_limit_504_while_decoding_and_503_while_queued(loaded):
    # One forward takes 1 s, the limit is 0.4 s: the first request is still in its first step when the second's
    # limit passes in the queue (a margin of 0.6 s for a loaded machine); the worker checks limits between steps.
    with start_server(slow(loaded, 1.0), max_batch=1, max_queue=4, timeout=0.4, batch_window_ms=0) as url:
        c = httpx.Client(base_url=url, timeout=60)
        results: list = []
        first = post_in_thread(url, {**LONG, "seed": 1}, results)
        wait_for(lambda: c.get("/health").json()["decoding"] == 1)
        second = post_in_thread(url, {**LONG, "seed": 2}, results)
        wait_for(lambda: c.get("/health").json()["waiting"] == 1)
        for t in (first, second):
            t.join(30)
        statuses = sorted(r.status_code for r in results)
        assert statuses == [503, 504], [r.text for r in results]
        by_status = {r.status_code: r for r in results}
        assert "time limit" in by_status[504].json()["error"]["message"]
        assert int(by_status[503].headers["retry-after"]) >= 1


def test_a_client_that_leaves_mid_stream_frees_its_slot(loaded):
    models = slow(loaded, 0.2)  # 16 steps: 3.2 s
    with start_server(models, max_batch=1, max_queue=0, batch_window_ms=0) as url:
        c = httpx.Client(base_url=url, timeout=60)
        with c.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
            lines = response.iter_lines()
            while "step" not in next(lines):  # the start event, then the first step
                pass
        left = time.monotonic()
        wait_for(lambda: c.get("/health").json()["decoding"] == 0, timeout=5)
        assert time.monotonic() - left < 1.6  # within a few steps, not after the 16 (3.2 s): a loaded machine's margin
        assert models["tiny-mdm"].net.calls < 16  # the batch stopped: no forward passes for nobody
        assert c.post("/v1/completions", json={**LONG, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_requests_that_arrive_together_share_one_batch(loaded, objective):
    prompts = ["She", "It is a truth universally", "Mr. Darcy", "Emma Woodhouse, handsome, clever"]
    body = {"model": f"tiny-{objective}", "max_tokens": 6, "temperature": 0, "stream": True}
    with start_server(loaded, max_batch=8, batch_window_ms=1000) as url:  # 1 s for four threads to connect
        c = httpx.Client(base_url=url, timeout=60)
        solo = [c.post("/v1/completions", json={**body, "prompt": p, "stream": False}).json() for p in prompts]
        batches = c.get("/health").json()["batches"]
        starts: list = [None] * len(prompts)
        texts: list = [None] * len(prompts)

        def go(i):
            with httpx.Client(base_url=url, timeout=60) as own:
                with own.stream("POST", "/v1/completions", json={**body, "prompt": prompts[i]}) as response:
                    chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
            starts[i] = chunks[0]["unmask"]["batch_rows"]
            texts[i] = "".join(ch["choices"][0]["text"] for ch in chunks)  # AR: the deltas; MDM: all at the end

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert starts == [4, 4, 4, 4]  # one batch of the four ragged prompts
        assert c.get("/health").json()["batches"] == batches + 1
        assert texts == [s["choices"][0]["text"] for s in solo]  # each row decodes as it would alone
