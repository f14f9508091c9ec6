"""`unmask serve`: an HTTP API over run directories and a web page that shows diffusion decoding happen.

config.py (ServeConfig: address, auth, limits) imports nothing heavy; engine.py (the queue, the
worker that batches requests, per-step events from the samplers' hook), schemas.py (pydantic
bodies), api.py (checks, jobs, responses, server-sent events) and app.py (FastAPI routes, errors,
the page in static/) need the `serve` extra: pip install -e '.[serve]'. load.py: a load test.
"""

from unmask._lazy import lazy_exports

EXPORTS = {
    "ServeConfig": "unmask.serve.config",
    "Engine": "unmask.serve.engine",
    "load_models": "unmask.serve.engine",
    "create_app": "unmask.serve.app",
    "serve": "unmask.serve.app",
    "BackgroundServer": "unmask.serve.app",
}
__all__ = sorted(EXPORTS)

__getattr__ = lazy_exports("unmask.serve", EXPORTS)
