"""A bounded load test on loopback: every request is answered or refused with 429/503; none lost or hung."""

from __future__ import annotations

import json

from tests.serve.conftest import slow, start_server
from unmask.serve.load import format_summary, run_load


def test_concurrent_clients_are_answered_or_refused_never_lost(loaded, artifacts):
    clients, per_client = 16, 3
    bodies = [
        {"model": "tiny-mdm", "prompt": "She was", "max_tokens": 8, "steps": 4, "temperature": 0.8},
        {"model": "tiny-ar", "prompt": "It is a truth", "max_tokens": 8, "temperature": 0.8},
        {"model": "tiny-mdm", "prompt": "Emma", "max_tokens": 8, "method": "threshold", "block_length": 4},
    ]
    # a little slower than the tiny nets are (5 ms per forward pass), so the 16 clients overlap
    with start_server(slow(loaded, 0.005), max_batch=4, max_queue=4, timeout=30) as url:
        summary = run_load(url, lambda i: bodies[i % len(bodies)], clients, per_client, timeout=60)
    print("\nserve load test:", format_summary(summary))
    (artifacts / "serve_load.json").write_text(json.dumps(summary, indent=2))
    assert summary["sent"] == clients * per_client
    assert summary["lost"] == 0, summary["lost_statuses"]
    assert summary["answered"] >= clients  # the queue drains: most requests get through
    assert summary["refused"] > 0  # 16 at once is more than 4 decoding + 4 waiting: the limit bites
    assert summary["p50_s"] <= summary["p95_s"] and summary["tokens_per_s"] > 0
