"""SIGTERM/SIGINT as a request to stop at the next step boundary, with a checkpoint."""

from __future__ import annotations

import signal
import threading


class TrainingStopped(Exception):  # noqa: N818 — a requested stop, not an error
    """SIGTERM/SIGINT: a checkpoint was saved at a step boundary; the message says how to resume."""


class StopSignals:
    """Turn SIGTERM/SIGINT into a request honoured at the next step boundary.

    A second signal gets the previous handler back (Ctrl-C twice aborts at once; the
    last checkpoint is still there). Only the main thread may install handlers.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        for s, handler in self._previous.items():
            signal.signal(s, handler)
