"""A bounded load test of a running `unmask serve`: N concurrent clients, each sending requests in turn.

Every request must end one of three ways: answered (200), refused with 429 / 503 and a Retry-After
header, or lost (any other status, a dropped connection, no answer within the client's timeout).
Standard library only (http.client in threads), so the benchmark needs nothing beyond the server.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Outcome:
    status: int | str
    """The HTTP status, or 'timeout' / 'error: ...' when there was none."""
    seconds: float
    tokens: int = 0
    retry_after: str | None = None


def post(url: str, path: str, body: dict, timeout: float, token: str | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one POST."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("POST", path, json.dumps(body), headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def one_request(url: str, body: dict, timeout: float, token: str | None = None) -> Outcome:
    start = time.perf_counter()
    try:
        status, data, headers = post(url, "/v1/completions", body, timeout, token)
    except TimeoutError:
        return Outcome("timeout", time.perf_counter() - start)
    except OSError as e:
        return Outcome(f"error: {type(e).__name__}", time.perf_counter() - start)
    tokens = data.get("usage", {}).get("completion_tokens", 0) if status == 200 else 0
    return Outcome(status, time.perf_counter() - start, tokens, headers.get("retry-after"))


def run_load(
    url: str,
    body: Callable[[int], dict],
    clients: int,
    requests_per_client: int,
    timeout: float = 120.0,
    token: str | None = None,
) -> dict:
    """Start `clients` threads at once, each sending `requests_per_client` requests (body(i) for request i)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def client(c: int) -> None:
        go.wait()  # every client starts together
        for r in range(requests_per_client):
            outcome = one_request(url, body(c * requests_per_client + r), timeout, token)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * requests_per_client + 30)
    wall = time.perf_counter() - start
    return summarise(outcomes, clients * requests_per_client, wall)


def summarise(outcomes: list[Outcome], sent: int, wall: float) -> dict:
    answered = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status in (429, 503) and o.retry_after]
    latencies = sorted(o.seconds for o in answered)
    cuts = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) >= 2 else latencies * 19
    tokens = sum(o.tokens for o in answered)
    return {
        "sent": sent,
        "answered": len(answered),
        "refused": len(refused),
        "lost": sent - len(answered) - len(refused),
        "lost_statuses": sorted({str(o.status) for o in outcomes if o not in answered and o not in refused}),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": cuts[18] if cuts else None,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
    }


def format_summary(s: dict) -> str:
    p50 = f"{s['p50_s']:.3f}" if s["p50_s"] is not None else "-"
    p95 = f"{s['p95_s']:.3f}" if s["p95_s"] is not None else "-"
    return (
        f"{s['sent']} requests: {s['answered']} answered, {s['refused']} refused (429/503 + Retry-After), "
        f"{s['lost']} lost; latency p50 {p50} s, p95 {p95} s; {s['tokens']} tokens in {s['wall_s']:.2f} s = "
        f"{s['tokens_per_s']:.1f} tokens/s"
    )
