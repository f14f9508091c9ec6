"""The HTTP API and the web page of `unmask serve` (FastAPI on uvicorn; the `serve` extra).

    GET  /                 the page: watch MDM denoise beside AR writing left to right
    GET  /health           liveness, the runs, the queue
    GET  /v1/models        the served runs (OpenAI's model list, plus objective and size)
    POST /v1/completions   OpenAI's completions subset + the sampler's fields; stream=true: SSE
    POST /v1/infill        an MDM run fills the blanks (____) and masked spans of a text
    GET  /openapi.json     the schema (and /docs)

Every error is one JSON line, {"error": {"message", "type", "code"}}, with a 4xx for bad input
(404 for an unknown run, 413 for a body over the limit), 429 / 503 with Retry-After when full,
504 past the time limit. Streams are server-sent events of OpenAI completion chunks, each with an
`unmask` field: `start` (the canvas: prompt and masks), one `step` per MDM denoising step (the
positions committed and their tokens) or per AR token, then `done`; `data: [DONE]` ends them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from unmask.config import ConfigError, check
from unmask.sampling.config import AR_OPTIONS, SamplerConfig
from unmask.sampling.text import AR_MAX_WINDOWS, encode_prompt
from unmask.serve.config import ServeConfig
from unmask.serve.engine import Engine, Job, Model, Refused
from unmask.serve.schemas import (
    SAMPLER_FIELDS,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    InfillRequest,
    ModelList,
)

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
ERROR_RESPONSES = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503, 504)}
STATIC = files("unmask.serve") / "static"


def error_response(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"message": " ".join(str(message).split()), "type": ERRORS.get(status, "error"), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def one_line(e: ValidationError, model: type) -> str:
    """The first problem of a pydantic error as one line that names the field."""
    errors = e.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        line = f"unknown field {field!r}; allowed: {', '.join(model.model_fields)}"
    elif first["type"] == "missing":
        line = f"{field}: required"
    else:
        value = repr(first.get("input"))
        line = f"{field}={value[:60]}: {first['msg']}"
    return line + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else "")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


async def read_body(request: Request, model: type, cfg: ServeConfig):
    """The JSON body as `model`, or Refused(400/413) with one line: not UTF-8, not JSON, wrong fields."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
        raise Refused(413, f"request body of {declared} bytes is over the limit of {cfg.max_body_bytes}")
    body = await request.body()
    if len(body) > cfg.max_body_bytes:
        raise Refused(413, f"request body of {len(body)} bytes is over the limit of {cfg.max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(
            400, f"the request body is not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8"
        ) from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise Refused(400, f"the request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise Refused(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise Refused(400, f"the request body must be a JSON object, not {type(obj).__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise Refused(400, one_line(e, model)) from None


def body_schema(model: type) -> dict:
    """openapi_extra for an endpoint that reads its body itself (to name non-UTF-8 and bad JSON plainly)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


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

    def sampler(self, req, m: Model) -> SamplerConfig:
        sampler = SamplerConfig.from_flat(**req.sampler_options())  # the one validation of sampler options
        if m.decoder == "ar":
            extra = sampler.mdm_only_options_set()
            check(
                not extra,
                f"{m.name} is an {m.objective} run: {', '.join(extra)}: MDM-only "
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
        sampler = self.sampler(req, m)
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
        check(m.decoder == "mdm", f"infilling needs an MDM run; {m.name} is an {m.objective} run (left to right)")
        self.check_rows(1, req.n)
        utf8_text(req.text, "text", self.cfg.max_prompt_chars)
        check(1 <= req.blank_length <= m.seq_len, f"blank_length={req.blank_length}: must be in [1, {m.seq_len}]")
        sampler = self.sampler(req, m)
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


def create_app(
    models: dict[str, Model], cfg: ServeConfig, engine: Engine | None = None, device: Any = "cpu"
) -> FastAPI:
    """The ASGI app over loaded runs; it starts the engine's worker on startup and stops it on shutdown."""
    from contextlib import asynccontextmanager

    engine = engine or Engine(models, cfg, device)
    api = Api(models, cfg, engine)

    @asynccontextmanager
    async def lifespan(app):
        if not engine.thread.is_alive():
            engine.start()
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(
        title="unmask serve",
        version="1",
        description="Masked diffusion and autoregressive runs over HTTP: OpenAI-style completions, infilling, "
        "and streams that show every denoising step.",
        lifespan=lifespan,
    )
    app.state.api = api

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused):
        return error_response(e.status, e.message, e.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = e.detail if e.status_code != 404 else f"no such endpoint {request.url.path} (see /openapi.json)"
        return error_response(e.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        return error_response(400, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):
        return error_response(500, f"internal error {type(e).__name__} (a bug: please report it)")

    def auth(request: Request) -> None:
        if cfg.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
            raise Refused(401, "missing or wrong bearer token: send the header Authorization: Bearer TOKEN")

    guarded = [Depends(auth)]

    @app.get("/health")
    async def health() -> dict:
        """Liveness, the served runs and the queue."""
        return {"status": "ok", "models": list(models), **engine.load()}

    @app.get("/v1/models", dependencies=guarded, response_model=ModelList, responses=ERROR_RESPONSES)
    async def list_models() -> dict:
        """The served runs (OpenAI's model list, with each run's objective, decoder, seq_len and size)."""
        return {
            "object": "list",
            "data": [
                {
                    "id": m.name,
                    "object": "model",
                    "created": int((m.path / "config.json").stat().st_mtime),
                    "owned_by": "unmask",
                    "objective": m.objective,
                    "decoder": m.decoder,
                    "seq_len": m.seq_len,
                    "parameters": m.parameters,
                }
                for m in models.values()
            ],
        }

    @app.post(
        "/v1/completions",
        dependencies=guarded,
        openapi_extra=body_schema(CompletionRequest),
        responses={200: {"model": CompletionResponse, "content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    )
    async def completions(request: Request):
        """Complete prompts with a run: AR decoding, or an MDM sampler chosen by the extra fields."""
        return await api.run(request, await read_body(request, CompletionRequest, cfg), "completion")

    @app.post(
        "/v1/infill",
        dependencies=guarded,
        openapi_extra=body_schema(InfillRequest),
        responses={200: {"model": CompletionResponse, "content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    )
    async def infill(request: Request):
        """Fill the blanks (____) and masked spans of a text with an MDM run; every other token stays."""
        return await api.run(request, await read_body(request, InfillRequest, cfg), "infill")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    return app


def serve(runs: list[str], cfg: ServeConfig) -> None:
    """Load the runs and serve them until interrupted (the body of `unmask serve`)."""
    import uvicorn

    from unmask.runtime import resolve_device

    device = resolve_device(cfg.device)
    models = load(runs, cfg, device)
    sock = listen(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"unmask serve: {', '.join(f'{m.name} ({m.objective})' for m in models.values())} on http://{shown}:{port}/ "
          "(page at /, API at /v1, schema at /openapi.json); Ctrl-C stops", flush=True)  # fmt: skip
    config = uvicorn.Config(create_app(models, cfg, device=device), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: any free one), or one line saying why it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --host or --port"
        ) from None
    return sock


def load(runs: list[str], cfg: ServeConfig, device: Any = "cpu") -> dict[str, Model]:
    from unmask.serve.engine import load_models

    return load_models(runs, cfg.which, device)


class BackgroundServer:
    """uvicorn in a thread on a loopback socket: `with BackgroundServer(app) as url:` (tests, benchmarks)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = listen(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            check(self.thread.is_alive() and time.monotonic() < deadline, "the test server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
