"""The endpoints' logic, apart from the web framework: a request → checked → a Job → a response or SSE chunks.

Checks name the field and the limit in one line (ConfigError → 400); the sampler's options go
through `SamplerConfig.from_flat` and `SamplerConfig.blocks`, the checks `unmask sample` uses.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from unmask.config import ConfigError, check
from unmask.sampling.config import AR_OPTIONS, SamplerConfig
from unmask.sampling.text import AR_MAX_WINDOWS, encode_prompt
from unmask.serve.config import ServeConfig
from unmask.serve.engine import Engine, Job, Model, Refused
from unmask.serve.schemas import SAMPLER_FIELDS, CompletionRequest, InfillRequest

MAX_STOPS = 4
ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def utf8_text(value: str, field: str, limit: int) -> str:
    check(len(value) <= limit, f"{field}: {len(value)} characters, over the server's maximum of {limit}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(f"{field}: not valid UTF-8 text (a lone surrogate at character {e.start})") from None
    return value


class Api:
    """The endpoints' logic over the loaded runs and the engine; FastAPI routes call into it."""

    def __init__(self, models: dict[str, Model], cfg: ServeConfig, engine: Engine):
        self.models, self.cfg, self.engine = models, cfg, engine

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise Refused(404, f"unknown model {name!r}; served runs: {', '.join(self.models)} (GET /v1/models)")
        return self.models[name]

    def sampler(self, req, m: Model, rows: int) -> SamplerConfig:
        sampler = SamplerConfig.from_flat(**req.sampler_options())  # the one validation of sampler options
        sampler.check_fits(m.seq_len, m.net.cfg.vocab_size, rows)  # bounds from the run, before any allocation
        if m.decoder == "ar":
            extra = sampler.mdm_only_options_set()
            check(
                not extra,
                f"{m.name} is an {m.objective.name} run: {', '.join(extra)}: MDM-only "
                "(AR runs take temperature, top_k, top_p)",
            )
        return sampler

    def check_rows(self, n_prompts: int, n: int) -> None:
        check(n_prompts >= 1, "prompt: give a string or a non-empty list of strings")
        rows = n_prompts * n
        check(
            rows <= self.cfg.max_batch,
            f"{n_prompts} prompt(s) x n={n} = {rows} sequences: over the server's "
            f"max_batch {self.cfg.max_batch}; send fewer per request",
        )

    def check_mdm(self, m: Model, ids: list[list[int]], gen_len: int, sampler: SamplerConfig) -> None:
        longest = max(len(p) for p in ids)
        check(
            longest + gen_len <= m.seq_len,
            f"prompt ({longest} tokens) + max_tokens {gen_len} exceeds run "
            f"{m.name}'s seq_len {m.seq_len}; shorten either",
        )
        n_masked = max(p.count(m.mask_id) for p in ids) + gen_len
        sampler.blocks(gen_len, n_masked)  # block_length divides, steps within bounds: one clear line

    def completion_job(self, req: CompletionRequest, emit, deadline: float) -> Job:
        m = self.model(req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        self.check_rows(len(prompts), req.n)
        for i, p in enumerate(prompts):
            utf8_text(p, "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]", self.cfg.max_prompt_chars)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        check(len(stops) <= MAX_STOPS and all(stops), f"stop: up to {MAX_STOPS} non-empty strings")
        check(
            req.max_tokens <= self.cfg.max_tokens,
            f"max_tokens={req.max_tokens}: over the server's maximum of {self.cfg.max_tokens}",
        )
        sampler = self.sampler(req, m, len(prompts) * req.n)
        if m.decoder == "ar":
            ids = [m.tok.encode(p).ids or [m.eod_id] for p in prompts]
            limit = AR_MAX_WINDOWS * m.seq_len
            check(req.max_tokens <= limit, f"max_tokens={req.max_tokens}: run {m.name} decodes at most {limit}")
            check(max(len(p) for p in ids) <= limit, f"prompt: over {limit} tokens for run {m.name}")
        else:
            ids = [encode_prompt(m.tok, p, m.mask_id, m.eod_id, 8, []) for p in prompts]
            self.check_mdm(m, ids, req.max_tokens, sampler)
        rows = [p for p in ids for _ in range(req.n)]
        return Job(m, "completion", rows, req.max_tokens, sampler, emit, deadline, req.stream, stops, req.seed)

    def infill_job(self, req: InfillRequest, emit, deadline: float) -> Job:
        m = self.model(req.model)
        check(m.decoder == "mdm", f"infilling needs an MDM run; {m.name} is an {m.objective.name} run (left to right)")
        self.check_rows(1, req.n)
        utf8_text(req.text, "text", self.cfg.max_prompt_chars)
        check(1 <= req.blank_length <= m.seq_len, f"blank_length={req.blank_length}: must be in [1, {m.seq_len}]")
        sampler = self.sampler(req, m, req.n)
        check(sampler.commit.block_length is None, "block_length: infilling has no appended generation to split")
        ids = encode_prompt(m.tok, req.text, m.mask_id, m.eod_id, req.blank_length, req.mask_spans or [])
        check(m.mask_id in ids, "text: nothing to infill; mark blanks with ____ or give mask_spans")
        self.check_mdm(m, [ids], 0, sampler)
        return Job(m, "infill", [ids] * req.n, 0, sampler, emit, deadline, req.stream, [], req.seed)

    # --- responses ---------------------------------------------------------------------------------

    def fills(self, m: Model, prompt: list[int], canvas: list[int]) -> list[str]:
        spans, current = [], []
        for p, t in zip(prompt, canvas, strict=True):
            if p == m.mask_id:
                current.append(t)
            elif current:
                spans.append(current)
                current = []
        return [m.text(s) for s in spans + ([current] if current else [])]

    def response(self, job: Job, done: dict, rid: str, created: int, sampler: dict, n: int) -> dict:
        m = job.model
        choices = []
        for i, row in enumerate(done["rows"]):
            choice = {"index": i, "text": row["text"], "logprobs": None, "finish_reason": row["finish_reason"]}
            if job.kind == "infill":
                choice["fills"] = self.fills(m, job.prompts[i], row["canvas"])
            choices.append(choice)
        prompt_tokens = sum(len(p) for p in job.prompts[::n])  # rows are each prompt n times
        completion = sum(row["tokens"] for row in done["rows"])
        return {
            "id": rid,
            "object": "infill" if job.kind == "infill" else "text_completion",
            "created": created,
            "model": m.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
            "unmask": {
                "decoder": m.decoder,
                "steps": done["steps"],
                "seconds": round(done["seconds"], 4),
                "sampler": sampler,
            },
        }

    def chunk(self, job: Job, ev: dict, rid: str, created: int, sent: dict[int, str]) -> dict:
        """One server-sent event: an OpenAI completion chunk with the step in its `unmask` field."""
        m = job.model
        kind = ev["event"]
        texts = {i: "" for i in range(job.rows)}
        reasons: dict[int, str | None] = {i: None for i in range(job.rows)}
        extra: dict[str, Any] = {"event": kind}
        if kind == "start":
            extra.update(
                decoder=m.decoder, mask_id=m.mask_id, planned_steps=ev["planned_steps"], batch_rows=ev["batch_rows"]
            )
            extra["rows"] = [
                {
                    "index": i,
                    "prompt_len": plen,
                    "tokens": canvas,
                    "pieces": [None if t == m.mask_id else m.piece(t) for t in canvas],
                }
                for i, (canvas, plen) in enumerate(zip(ev["canvas"], ev["prompt_lens"], strict=True))
            ]
        elif kind == "step":
            extra["step"] = ev["step"]
            extra["rows"] = []
            for i, row in enumerate(ev["rows"]):
                index = row.get("index", i)
                extra["rows"].append(
                    {
                        "index": index,
                        "positions": row["positions"],
                        "tokens": row["tokens"],
                        "pieces": [m.piece(t) for t in row["tokens"]],
                    }
                )
                if "text" in row:  # AR: the text grows left to right
                    texts[index] = row["text"]
                    sent[index] = sent.get(index, "") + row["text"]
                    reasons[index] = row["finish_reason"]
        else:  # done: MDM's text appears whole; AR sends what the steps held back
            extra.update(steps=ev["steps"], seconds=round(ev["seconds"], 4))
            for i, row in enumerate(ev["rows"]):
                already = sent.get(i, "")
                texts[i] = row["text"][len(already) :] if row["text"].startswith(already) else ""
                reasons[i] = row["finish_reason"]
            extra["rows"] = [{"index": i, "tokens": row["canvas"]} for i, row in enumerate(ev["rows"])]
            completion = sum(row["tokens"] for row in ev["rows"])
            extra["usage"] = {"completion_tokens": completion}
        return {
            "id": rid,
            "object": "infill" if job.kind == "infill" else "text_completion",
            "created": created,
            "model": m.name,
            "choices": [
                {"index": i, "text": texts[i], "logprobs": None, "finish_reason": reasons[i]} for i in range(job.rows)
            ],
            "unmask": extra,
        }

    async def run(self, request: Request, req, kind: str):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + self.cfg.timeout

        def emit(ev: dict) -> None:  # from the worker thread
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        try:
            job = (self.completion_job if kind == "completion" else self.infill_job)(req, emit, deadline)
        except ConfigError as e:
            raise Refused(400, str(e)) from None
        self.engine.submit(job)
        rid, created = f"{'cmpl' if kind == 'completion' else 'infill'}-{uuid.uuid4().hex[:24]}", int(time.time())
        names = SAMPLER_FIELDS if job.model.decoder == "mdm" else AR_OPTIONS
        sampler = {k: v for k, v in job.sampler.flat().items() if k in names}
        if req.stream:
            return StreamingResponse(
                self.events(job, queue, deadline, rid, created),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)  # nobody reads it; the slot is freed below
                    if time.monotonic() > deadline + 5:  # the worker enforces the limit; this is a backstop
                        raise Refused(504, f"no answer within the time limit of {self.cfg.timeout:g} s") from None
                    continue
                if ev["event"] == "error":
                    retry = self.engine.retry_after() if ev["status"] == 503 else None
                    raise Refused(ev["status"], ev["message"], retry)
                if ev["event"] == "done":
                    return JSONResponse(self.response(job, ev, rid, created, sampler, req.n))
        finally:
            self.engine.cancel(job)  # a no-op for a finished job; frees the place of an abandoned one

    async def events(
        self, job: Job, queue: asyncio.Queue, deadline: float, rid: str, created: int
    ) -> AsyncIterator[str]:
        sent: dict[int, str] = {}
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=max(0.1, deadline + 5 - time.monotonic()))
                except asyncio.TimeoutError:
                    ev = {"event": "error", "status": 504, "message": f"no answer within {self.cfg.timeout:g} s"}
                if ev["event"] == "error":
                    status = ev["status"]
                    error = {"message": ev["message"], "type": ERRORS.get(status, "error"), "code": status}
                    yield f"data: {json.dumps({'error': error})}\n\n"
                    break
                yield f"data: {json.dumps(self.chunk(job, ev, rid, created, sent))}\n\n"
                if ev["event"] == "done":
                    break
            yield "data: [DONE]\n\n"
        finally:  # the client went away (the response was cancelled) or the stream ended
            self.engine.cancel(job)
