"""A real browser against the real server: the Sanity checks page draws its strip and curves, and the
interventions panel on the Channel attention page updates its before/after maps when the intervention
changes (a fragment: the page above it is not recomputed). Screenshots go to test-output/browser/."""

from __future__ import annotations

import time

import pytest
from appserver import OUTPUT, app_server, wait_idle

pytestmark = pytest.mark.browser


def _captions(page) -> list[str]:
    return page.locator("[data-testid='stImageCaption']").all_inner_texts()


def _wait_for(predicate, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError("the page did not show what was expected")


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option).first.click()


def test_sanity_page_and_interventions_in_a_browser(tmp_path, browser_page):
    shots = OUTPUT / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser_page
    with app_server(tmp_path / "home") as (base, _):
        page.goto(base + "/sanity")
        page.get_by_text("Sanity checks").first.wait_for(timeout=60_000)
        wait_idle(page, 300)
        _wait_for(lambda: any("random down to stem" in c for c in _captions(page)))
        assert page.get_by_text("Reading.").count() >= 1
        assert page.locator("[data-testid='stPlotlyChart']").count() >= 1
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(shots / "5-sanity.png"), full_page=True)

        page.goto(base + "/channel_attention")
        wait_idle(page, 300)
        page.get_by_text("Intervene: change the attention").first.wait_for(timeout=120_000)
        _wait_for(lambda: any(c.startswith("after ·") for c in _captions(page)))
        page.get_by_text("Intervene: change the attention").first.scroll_into_view_if_needed()
        before = [c for c in _captions(page) if c.startswith("after ·")]
        _choose(page, "Intervention", "zero the k most-weighted channels")
        _wait_for(lambda: page.get_by_text("zero the 4 most-weighted channels").count() >= 1)
        wait_idle(page, 300)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stAlertContentError']").count() == 0
        after = [c for c in _captions(page) if c.startswith("after ·")]
        assert len(after) == len(before) >= 1
        page.get_by_text("Intervene: change the attention").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "6-interventions.png"), full_page=True)
