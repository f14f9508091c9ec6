"""The generation engine of `unmask serve`: loaded runs, a bounded queue and one worker that batches.

A request becomes a Job (prompts tokenised and checked by the app). One worker thread takes the
oldest job and waits up to `batch_window_ms` for others that can share its batch (same run and
sampler settings; MDM: the same generation length), left-pads every prompt into one batch
(`left_pad`: each row decodes as it would alone) and decodes it. The samplers' `on_step` hook
reports each step to every job (streaming: the positions committed and their tokens) and stops
the batch once each job in it has finished, been cancelled (its client went away) or run out of
time, so a job that leaves frees its place at the next step.

Concurrency: at most `max_batch` sequences decode at a time, at most `max_queue` requests wait;
beyond that `submit` refuses with 429 and a Retry-After estimated from recent batches.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unmask.config import ConfigError, check
from unmask.objectives import Objective, Specials
from unmask.run import Run
from unmask.sampling.ar import left_pad
from unmask.sampling.config import SamplerConfig
from unmask.sampling.decoder import generate
from unmask.serve.config import ServeConfig


class Refused(Exception):
    """A request the server will not run: an HTTP status, one line, and Retry-After seconds (429/503)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass
class Model:
    """One run, loaded read-only: its network, tokenizer and special ids."""

    name: str
    path: Path
    objective: Objective
    """The run's objective: it chooses the decoder (`unmask.sampling.generate`)."""
    net: torch.nn.Module
    tok: Any
    eod_id: int
    mask_id: int
    pad_id: int
    seq_len: int
    parameters: int

    @property
    def decoder(self) -> str:
        """'ar' (left to right, KV cache) or 'mdm' (any MDM sampler)."""
        return self.objective.decoder

    @property
    def specials(self) -> Specials:
        return Specials(self.mask_id, self.pad_id, self.eod_id)

    def piece(self, token: int) -> str:
        """The text of one token (byte-level pieces of a multi-byte character show as U+FFFD)."""
        return self.tok.decode([token])

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def load_models(
    paths: list[str], which: str = "last", device: torch.device | str = "cpu", dtype: str | torch.dtype | None = None
) -> dict[str, Model]:
    """Open every run directory with `Run` (safetensors weights, no pickle) under its folder's name, the weights
    in `dtype` (None or 'auto': each file's own: an imported bf16 run stays bf16)."""
    check(len(paths) > 0, "serve needs at least one run directory: unmask serve RUN [RUN ...]")
    models: dict[str, Model] = {}
    for path in paths:
        run = Run(path)
        check(run.name not in models, f"two runs are named {run.name!r} ({models.get(run.name, run).path} and "
              f"{run.path}); serve runs whose folder names differ")  # fmt: skip
        ids = run.special_ids
        net = run.load_model(which, device, dtype)
        models[run.name] = Model(
            name=run.name,
            path=run.path,
            objective=run.objective,
            net=net,
            tok=run.tokenizer(),
            eod_id=ids.eod_id,
            mask_id=ids.mask_id,
            pad_id=ids.pad_id,
            seq_len=run.model_config.seq_len,
            parameters=sum(p.numel() for p in net.parameters()),
        )
    return models


Emit = Callable[[dict], None]


@dataclass(eq=False)
class Job:
    """One request: rows (prompt i repeated n times, prompt-major), what to decode, where events go."""

    model: Model
    kind: str
    """'completion' (generate after the prompt) or 'infill' (only the masks inside it)."""
    prompts: list[list[int]]
    gen_len: int
    sampler: SamplerConfig
    emit: Emit
    """Receives every event of the job (called from the worker thread; must be thread-safe and quick)."""
    deadline: float
    """time.monotonic() past which the job is dropped (503 if still queued, 504 if decoding)."""
    stream: bool = False
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    steps: int = 0
    started: float = 0.0

    def __post_init__(self) -> None:
        self.reasons: list[str | None] = [None] * len(self.prompts)
        self.generated: list[list[int]] = [[] for _ in self.prompts]  # AR: ids so far per row
        self.sent: list[str] = ["" for _ in self.prompts]  # AR: text already streamed per row

    @property
    def rows(self) -> int:
        return len(self.prompts)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys share a batch (a job with its own seed never shares: it must reproduce alone)."""
        m, s = self.model, self.sampler
        own = ("seed", id(self)) if self.seed is not None else ()
        if m.decoder == "ar":
            return (m.name, "ar", s.temperature, s.top_k, s.top_p, *own)
        return (m.name, self.kind, self.gen_len, tuple(sorted(s.flat().items())), *own)

    def fail(self, status: int, message: str) -> None:
        if not self.finished:
            self.finished = True
            self.emit({"event": "error", "status": status, "message": message})


@dataclass
class Stats:
    batches: int = 0
    rows: int = 0
    tokens: int = 0
    busy_seconds: float = 0.0
    batch_seconds: float = 0.0
    """Moving average of a batch's wall time (Retry-After estimates)."""


class _BatchOver(Exception):
    """Raised inside the sampler's hook: every job of the batch is finished, cancelled or out of time."""


class Engine:
    """The queue and the worker thread. `submit` from any thread; `close` to stop."""

    def __init__(self, models: dict[str, Model], cfg: ServeConfig, device: torch.device | str = "cpu"):
        self.models, self.cfg, self.device = models, cfg, torch.device(device)
        self.cond = threading.Condition()
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.stats = Stats()
        self.closed = False
        self._seeds = itertools.count()
        self.thread = threading.Thread(target=self._loop, name="unmask-serve-worker", daemon=True)

    def start(self) -> Engine:
        self.thread.start()
        return self

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for job in self.waiting:
                job.fail(503, "the server is shutting down; retry on another instance")
            self.waiting.clear()
            for job in self.running:
                job.cancelled.set()
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, in batches, times a batch's wall time."""
        batches = 1 + len(self.waiting) // max(self.cfg.max_batch, 1)
        return max(1, math.ceil(batches * (self.stats.batch_seconds or 1.0)))

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it: 503 when closing, 429 when the queue is full (both with Retry-After)."""
        with self.cond:
            if self.closed:
                raise Refused(503, "the server is shutting down", retry_after=5)
            if len(self.waiting) >= self.cfg.max_queue and not (self.cfg.max_queue == 0 and self._idle()):
                raise Refused(
                    429,
                    f"too many requests: {len(self.waiting)} waiting (max_queue {self.cfg.max_queue}) and "
                    f"{sum(j.rows for j in self.running)} sequences decoding (max_batch {self.cfg.max_batch}); "
                    "retry later",
                    retry_after=self.retry_after(),
                )
            self.waiting.append(job)
            self.cond.notify_all()

    def _idle(self) -> bool:
        return not self.running and not self.waiting

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job from the queue now, or from its batch at the next step."""
        job.cancelled.set()
        with self.cond:
            if job in self.waiting:
                self.waiting.remove(job)
                job.finished = True

    def load(self) -> dict:
        with self.cond:
            return {
                "waiting": len(self.waiting),
                "decoding": sum(j.rows for j in self.running),
                "max_batch": self.cfg.max_batch,
                "max_queue": self.cfg.max_queue,
                "batches": self.stats.batches,
                "tokens": self.stats.tokens,
            }

    # --- the worker ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        while True:
            jobs = self._take_batch()
            if jobs is None:
                return
            start = time.perf_counter()
            try:
                self._run(jobs)
            except Exception as e:  # a bug, not bad input: the jobs get a 500 line, the server goes on
                for job in jobs:
                    job.fail(500, f"internal error {type(e).__name__}: {e}")
            seconds = time.perf_counter() - start
            with self.cond:
                self.running = []
                s = self.stats
                s.batches, s.rows = s.batches + 1, s.rows + sum(j.rows for j in jobs)
                s.busy_seconds += seconds
                s.batch_seconds = seconds if s.batches == 1 else 0.8 * s.batch_seconds + 0.2 * seconds
                self.cond.notify_all()

    def _take_batch(self) -> list[Job] | None:
        """The oldest live job and every waiting job that can share its batch, up to max_batch rows."""
        with self.cond:
            while True:
                while not self.waiting and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return None
                first = self.waiting.popleft()
                if first.cancelled.is_set():
                    continue
                if time.monotonic() > first.deadline:
                    first.fail(
                        503, f"the server was busy for the whole time limit ({self.cfg.timeout:g} s); retry later"
                    )
                    continue
                break
            jobs, rows = [first], first.rows
            self.running = jobs  # counted as decoding while the window collects the others
            until = time.monotonic() + self.cfg.batch_window_ms / 1000
            while rows < self.cfg.max_batch:
                for job in list(self.waiting):
                    if job.key == first.key and rows + job.rows <= self.cfg.max_batch and not job.cancelled.is_set():
                        self.waiting.remove(job)
                        jobs.append(job)
                        rows += job.rows
                left = until - time.monotonic()
                if left <= 0 or rows >= self.cfg.max_batch:
                    break
                self.cond.wait(left)
                if self.closed:
                    break
            return jobs

    def _run(self, jobs: list[Job]) -> None:
        m = jobs[0].model
        prompts = [p for job in jobs for p in job.prompts]
        spans, a = [], 0
        for job in jobs:
            spans.append((job, a, a + job.rows))
            a += job.rows
        tokens, real = left_pad(prompts, m.pad_id)  # (B, P)
        P = tokens.shape[1]
        pads = [P - len(p) for p in prompts]
        gen_len = max(job.gen_len for job in jobs)
        now = time.monotonic()
        for job, _, _ in spans:
            job.started = now
            if job.stream:
                steps = self._planned_steps(job)
                canvas = [p + [m.mask_id] * job.gen_len for p in job.prompts]
                job.emit({"event": "start", "canvas": canvas, "prompt_lens": [len(p) for p in job.prompts],
                          "planned_steps": steps, "batch_rows": len(prompts)})  # fmt: skip
        step = 0

        def on_step(committed: list[list[int]], x: torch.Tensor) -> None:
            nonlocal step
            step += 1
            now = time.monotonic()
            xs = x.tolist() if m.decoder == "ar" or any(j.stream for j in jobs) else None  # host sync
            live = False
            for job, a, b in spans:
                if job.finished:
                    continue
                if job.cancelled.is_set():
                    job.finished = True
                    continue
                if now > job.deadline:
                    job.fail(504, f"generation ran past the time limit of {self.cfg.timeout:g} s; ask for fewer tokens")
                    continue
                job.steps = step
                if m.decoder == "ar":
                    self._ar_step(job, committed[a:b], xs[a:b], pads[a:b])
                elif job.stream:
                    rows = []
                    for row, pos, pad in zip(xs[a:b], committed[a:b], pads[a:b], strict=True):
                        rows.append({"positions": [p - pad for p in pos], "tokens": [row[p] for p in pos]})
                    job.emit({"event": "step", "step": step, "rows": rows})
                live |= not job.finished
            if not live:
                raise _BatchOver

        dev = self.device
        seed = next(self._seeds) if jobs[0].seed is None else jobs[0].seed
        g = torch.Generator(dev).manual_seed(seed)
        mask = real.to(dev) if not bool(real.all()) else None
        try:
            out = generate(
                m.net, tokens.to(dev), length=gen_len, objective=m.objective, sampler=jobs[0].sampler,
                specials=m.specials, generator=g, prompt_mask=mask, on_step=on_step,
            )  # fmt: skip
        except _BatchOver:
            out = None
        except ConfigError as e:  # a combination the app's checks let through: still the user's input
            for job in jobs:
                job.fail(400, str(e))
            return
        final = out.tokens.tolist() if out is not None else None
        for job, a, b in spans:
            if job.finished:
                continue
            if m.decoder == "ar":  # rows that ran to the batch's end without their own stop
                for r in range(job.rows):
                    job.reasons[r] = job.reasons[r] or "length"
                self._finish(job, [prompt + gen for prompt, gen in zip(job.prompts, job.generated, strict=True)])
            else:
                self._finish(job, [row[pad:] for row, pad in zip(final[a:b], pads[a:b], strict=True)])

    def _planned_steps(self, job: Job) -> int | None:
        if job.model.decoder == "ar":
            return job.gen_len
        if job.sampler.commit.method == "threshold":
            return None  # as many as it takes
        n_masked = max(sum(t == job.model.mask_id for t in p) for p in job.prompts) + job.gen_len
        n_blocks, per_block = job.sampler.blocks(job.gen_len, n_masked)
        return n_blocks * per_block

    def _ar_step(self, job: Job, committed, xs, pads) -> None:
        """One AR token per row: record it, stop the rows that ended (eod, a stop string, max_tokens)."""
        m = job.model
        rows = []
        for r, (row, pos, pad) in enumerate(zip(xs, committed, pads, strict=True)):
            if job.reasons[r] is not None:
                continue
            token = row[pos[0]]
            delta = ""
            if token == m.eod_id:
                job.reasons[r] = "stop"
            else:
                job.generated[r].append(token)
                text = m.text(job.generated[r])
                cut = stop_index(text, job.stops)
                if cut is not None:
                    text, job.reasons[r] = text[:cut], "stop"
                if len(job.generated[r]) >= job.gen_len:
                    job.reasons[r] = job.reasons[r] or "length"
                stable = text if job.reasons[r] else text.rstrip("\ufffd")  # a character still being spelled
                if stable.startswith(job.sent[r]):
                    delta, job.sent[r] = stable[len(job.sent[r]) :], stable
            if job.stream:
                rows.append({"index": r, "positions": [pos[0] - pad], "tokens": [token], "text": delta,
                             "finish_reason": job.reasons[r]})  # fmt: skip
        if job.stream and rows:
            job.emit({"event": "step", "step": job.steps, "rows": rows})
        if all(job.reasons):
            self._finish(job, [p + g for p, g in zip(job.prompts, job.generated, strict=True)])

    def _finish(self, job: Job, canvases: list[list[int]]) -> None:
        """The job's result: per row the text (completion: after the prompt, up to eod / a stop string)."""
        m = job.model
        results = []
        for r, (prompt, canvas) in enumerate(zip(job.prompts, canvases, strict=True)):
            if job.kind == "infill":
                text, reason, answer = (
                    m.text(canvas),
                    "length",
                    [t for t, p in zip(canvas, prompt, strict=True) if p == m.mask_id],
                )
            else:
                answer = canvas[len(prompt) :]
                reason = job.reasons[r]
                if m.eod_id in answer:
                    answer, reason = answer[: answer.index(m.eod_id)], "stop"
                text = m.text(answer)
                cut = stop_index(text, job.stops)
                if cut is not None:
                    text, reason = text[:cut], "stop"
            results.append({"text": text, "finish_reason": reason or "length", "tokens": len(answer),
                            "canvas": canvas})  # fmt: skip
        job.finished = True
        with self.cond:
            self.stats.tokens += sum(r["tokens"] for r in results)
        job.emit({"event": "done", "rows": results, "steps": job.steps,
                  "seconds": time.monotonic() - job.started})  # fmt: skip


def stop_index(text: str, stops: list[str]) -> int | None:
    """Where the first stop string starts in text, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None
