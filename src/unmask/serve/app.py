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
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from unmask.config import ConfigError, check
from unmask.serve.api import ERRORS, Api
from unmask.serve.config import ServeConfig
from unmask.serve.engine import Engine, Model, Refused
from unmask.serve.schemas import (
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    InfillRequest,
    ModelList,
)

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
                    "objective": m.objective.name,
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
    names = ", ".join(f"{m.name} ({m.objective.name})" for m in models.values())
    print(f"unmask serve: {names} on http://{shown}:{port}/ (page at /, API at /v1, schema at /openapi.json); "
          "Ctrl-C stops", flush=True)  # fmt: skip
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

    return load_models(runs, cfg.which, device, cfg.dtype)


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
