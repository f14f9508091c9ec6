"""The web page in headless Chromium: masked tokens turn into text step by step; AR and MDM side by side."""

from __future__ import annotations

from itertools import pairwise

import pytest

from tests.serve.conftest import CHROMIUM_FLAGS, start_server


@pytest.fixture(scope="module")
def page(loaded, chromium):
    from playwright.sync_api import sync_playwright

    with start_server(loaded, max_tokens=24) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url + "/")
            yield page
        finally:
            browser.close()


def fill(page, **values) -> None:
    for key, value in values.items():
        page.fill(f"#{key}", str(value))


def test_the_page_shows_masks_turning_into_text_over_several_steps(page, artifacts):
    page.wait_for_function("document.querySelectorAll('#run option').length === 2")  # the runs, from /v1/models
    page.select_option("#run", "tiny-mdm")
    page.fill("#prompt", "She was")
    fill(page, max_tokens=16, steps=8, temperature=0.8, delay=150)
    page.click("#go")
    pane = page.locator(".pane[data-run='tiny-mdm']")
    # mid-way: some positions committed, others still masked
    page.wait_for_function(
        "() => { const p = document.querySelector('.pane'); const m = p.querySelectorAll('.tok.mask').length;"
        " return m > 0 && m < 16 && p.querySelectorAll('.tok[data-step]').length > 0; }"
    )
    page.screenshot(path=str(artifacts / "serve_page_decoding.png"), full_page=True)
    page.wait_for_function("document.querySelector('.pane').dataset.state === 'done'", timeout=30_000)
    trace = page.evaluate("window.unmaskTrace['tiny-mdm']")
    assert trace[0] == 16 and trace[-1] == 0 and len(trace) == 9  # all masks, then 8 steps of 2
    assert all(a > b for a, b in pairwise(trace)), trace
    steps = {int(s) for s in pane.locator(".tok[data-step]").evaluate_all("els => els.map(e => e.dataset.step)")}
    assert steps == set(range(1, 9))  # every token coloured by the step that committed it
    assert pane.locator(".tok.mask").count() == 0 and pane.locator(".answer").inner_text() != ""


def test_side_by_side_runs_ar_and_mdm_on_the_same_prompt(page, artifacts):
    page.check("input[name=mode][value=side]")
    page.select_option("#ar-run", "tiny-ar")
    page.select_option("#mdm-run", "tiny-mdm")
    page.fill("#prompt", "It is a truth")
    fill(page, max_tokens=12, steps=6, delay=60)
    page.click("#go")
    page.wait_for_function(
        "[...document.querySelectorAll('.pane')].length === 2 && "
        "[...document.querySelectorAll('.pane')].every(p => p.dataset.state === 'done')",
        timeout=30_000,
    )
    panes = page.locator(".pane")
    assert sorted(panes.evaluate_all("els => els.map(e => e.dataset.decoder)")) == ["ar", "mdm"]
    traces = page.evaluate("window.unmaskTrace")
    assert traces["tiny-mdm"] == [12, 10, 8, 6, 4, 2, 0]
    ar = traces["tiny-ar"]  # left to right, one token per step (it may stop early at end of document)
    assert ar[0] == 12 and all(a - b == 1 for a, b in pairwise(ar))
    for run in ("tiny-ar", "tiny-mdm"):
        assert page.locator(f".pane[data-run='{run}'] .tok[data-step]").count() > 0
    page.screenshot(path=str(artifacts / "serve_page_side_by_side.png"), full_page=True)
    assert (artifacts / "serve_page_side_by_side.png").stat().st_size > 0
