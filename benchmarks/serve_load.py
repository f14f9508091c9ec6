"""Dynamic batching in `unmask serve`: 8 concurrent requests vs one, and a bounded load test, on loopback.

    python benchmarks/serve_load.py                       # trains demo-size AR and MDM runs first if needed
    python benchmarks/serve_load.py --mdm RUN --ar RUN    # or serve runs you have

For each run: the median latency of one request alone (t1), the median wall time of 8 requests
sent at once until the last answer (t8, with dynamic batching; and again with max_batch 1, i.e.
one request at a time), and the ratio t8 / t1 (target < 3). Then N clients x M requests against
small limits: answered / refused (429/503) / lost, p50/p95 latency, tokens/s. Needs the serve extra.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import threading
import time
from pathlib import Path

from unmask.serve.app import BackgroundServer, create_app
from unmask.serve.config import ServeConfig
from unmask.serve.engine import load_models
from unmask.serve.load import format_summary, one_request, run_load

PROMPTS = [
    "She was", "It is a truth", "Mr. Darcy", "Emma Woodhouse, handsome, clever,",
    "The family of Dashwood", "Sir Walter Elliot", "Catherine Morland", "Mrs. Bennet said",
]  # fmt: skip


def demo_runs(work: Path, epochs: int) -> dict[str, str]:
    """Demo-size AR and MDM runs (configs/demo.yaml's model and data) trained for `epochs`, reused if present."""
    from unmask.config import DataConfig, ModelConfig, TrainConfig
    from unmask.data import prepare
    from unmask.training import train

    data = work / "data"
    if not (data / "manifest.json").exists():
        prepare(DataConfig(unique_tokens=25_000, val_tokens=8192, vocab_size=1024, seq_len=64), data, quiet=True)
    runs = {}
    for objective in ("ar", "mdm"):
        out = work / f"{objective}-E{epochs}"
        if not (out / "last.safetensors").exists():
            print(f"training {out} ...", flush=True)
            model = ModelConfig(size="demo", local_prior=5.0, causal=objective == "ar")
            train(data, out, model, TrainConfig.from_flat(objective=objective, epochs=epochs, batch_size=16, lr=2e-3),
                  quiet=True, tensorboard=False)  # fmt: skip
        runs[objective] = str(out)
    return runs


MDM_SAMPLERS = {
    "low_confidence": {},  # full recompute every step
    "blocks16+dual": {"block_length": 16, "cache": "dual"},  # semi-AR, only the block recomputed
}


def body(model: str, decoder: str, i: int, max_tokens: int = 48, sampler: str = "low_confidence") -> dict:
    b = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 1.0}
    if decoder == "mdm":  # one token per step, as AR
        b.update(steps=max_tokens, **MDM_SAMPLERS[sampler])
    return b


def concurrent(url: str, bodies: list[dict]) -> float:
    """Wall time from sending every body at once until the last answer."""
    go = threading.Barrier(len(bodies) + 1)
    statuses = []

    def send(b):
        go.wait()
        statuses.append(one_request(url, b, timeout=600).status)

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    assert statuses == [200] * len(bodies), statuses
    return wall


def ratio_rows(models, max_tokens: int, n: int, repeats: int) -> list[dict]:
    cases = [(name, s) for name, m in models.items() for s in (MDM_SAMPLERS if m.decoder == "mdm" else ["-"])]
    rows = []
    for max_batch in (8, 1):
        cfg = ServeConfig(max_batch=max_batch, max_queue=64, timeout=600)
        with BackgroundServer(create_app(models, cfg)) as url:
            for name, sampler in cases:
                m = models[name]
                make = functools.partial(body, name, m.decoder, max_tokens=max_tokens, sampler=sampler)
                one_request(url, make(0), 600)  # warm-up
                t1s, tns = [], []
                for _ in range(repeats):  # interleaved: the shared machine's speed drifts
                    single = one_request(url, make(0), 600)
                    assert single.status == 200, single.status
                    t1s.append(single.seconds)
                    tns.append(concurrent(url, [make(i) for i in range(n)]))
                t1, tn = statistics.median(t1s), statistics.median(tns)
                rows.append({"run": name, "decoder": m.decoder, "sampler": sampler, "max_batch": max_batch,
                             "t1_s": t1, f"t{n}_s": tn, "ratio": tn / t1})  # fmt: skip
                print(f"{name:>10} ({m.decoder}, {sampler}), max_batch {max_batch}: one request {t1:.3f} s, "
                      f"{n} at once {tn:.3f} s, ratio {tn / t1:.2f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mdm", help="an MDM run directory (default: train a demo-size one under --work)")
    p.add_argument("--ar", help="an AR run directory (default: train a demo-size one under --work)")
    p.add_argument("--work", default="runs/bench-serve", help="where demo-size runs are trained and kept")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max_tokens", type=int, default=48)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=4, help="requests per client in the load test")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    runs = demo_runs(Path(args.work), args.epochs) if not (args.mdm and args.ar) else {"ar": args.ar, "mdm": args.mdm}
    models = load_models([runs["ar"], runs["mdm"]])
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; max_tokens {args.max_tokens}", flush=True)
    rows = ratio_rows(models, args.max_tokens, args.concurrent, args.repeats)

    names = list(models)
    cfg = ServeConfig(max_batch=8, max_queue=8, timeout=120)
    with BackgroundServer(create_app(models, cfg)) as url:
        load = run_load(
            url,
            lambda i: body(names[i % 2], models[names[i % 2]].decoder, i, args.max_tokens),
            args.clients,
            args.requests,
            timeout=300,
        )
    print(f"load test ({args.clients} clients x {args.requests}, max_batch 8, max_queue 8): {format_summary(load)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"ratios": rows, "load": load}, indent=2))


if __name__ == "__main__":
    main()
