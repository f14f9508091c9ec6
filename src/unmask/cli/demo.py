"""`unmask demo`: the main job, AR vs MDM on a small budget (its options are DemoConfig's fields)."""

from __future__ import annotations

from unmask.demo import DemoConfig


def demo(config: DemoConfig | None = None) -> dict:
    """The main job: AR vs MDM on a small unique-token budget for several epoch counts, on CPU."""
    from unmask.demo import demo as run_demo

    return run_demo(cfg=config)
