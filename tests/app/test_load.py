"""Load: 10 browser tabs doing Inspect on the same models while a training run goes.

Checks: no tab shows an error; every tab shows the single-tab numbers (class, probability, deletion and
insertion AUC under each heat map); the run finishes; the server's
memory after the tabs close returns near where it was after the single-tab warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from appserver import CHROMIUM, CHROMIUM_ARGS, OUTPUT, app_server, scores, stable_scores, wait_idle

pytestmark = pytest.mark.load
TABS = 10


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_ten_tabs_inspect_while_training(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = OUTPUT / "load"
    out.mkdir(parents=True, exist_ok=True)
    with app_server(tmp_path / "home") as (base, server), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # single tab: the reference result, and the memory after warm-up
        context = browser.new_context(viewport={"width": 1400, "height": 2400})
        page = context.new_page()
        page.goto(base + "/inspect_image")
        wait_idle(page, 300)
        reference_scores = stable_scores(page)
        assert reference_scores and len(reference_scores) % 3 == 0  # 3 gallery pictures x chosen models
        context.close()
        rss_start = _rss_mb(server.pid)

        # a training run in the background
        train = browser.new_page()
        train.goto(base + "/train")
        wait_idle(train, 300)
        train.get_by_role("button", name="Start training").click()
        train.get_by_text("Started").first.wait_for(timeout=120_000)

        # ten tabs at once, each in its own session
        results: dict[int, list[str]] = {}
        errors: dict[int, str] = {}
        timings: dict[int, float] = {}
        contexts = [browser.new_context(viewport={"width": 1400, "height": 2400}) for _ in range(TABS)]
        pages = [c.new_page() for c in contexts]
        started = time.perf_counter()
        for page in pages:  # Playwright's sync API is single-threaded: open all, then wait for all
            page.goto(base + "/inspect_image", wait_until="commit")
        for i, page in enumerate(pages):
            try:
                wait_idle(page, 400)
                timings[i] = time.perf_counter() - started
                deadline = time.monotonic() + 300
                results[i] = scores(page)
                while len(results[i]) < len(reference_scores) and time.monotonic() < deadline:
                    time.sleep(0.5)  # the page paints after its (cached) rerun has finished
                    results[i] = scores(page)
                if page.locator("[data-testid='stException']").count() or page.locator("[data-testid='stAlertContentError']").count():
                    errors[i] = "error element on the page"
            except Exception as err:  # a timeout is a failure of this tab
                errors[i] = repr(err)
        pages[0].screenshot(path=str(out / "tab-0.png"))
        for c in contexts:
            c.close()
        assert not errors, errors
        # the numbers each tab shows (class, probability, deletion and insertion AUC per map) equal the
        # single-tab ones (media ids are not compared: a tab read right after its rerun can still hold
        # elements of the previous render)
        differing = {i: r for i, r in results.items() if r != reference_scores}
        assert not differing, f"single tab {reference_scores}; differing tabs {differing}"

        # the run finishes
        train.get_by_text("In the zoo as").first.wait_for(timeout=600_000)
        train.close()
        browser.close()
        time.sleep(5)
        rss_end = _rss_mb(server.pid)
        (out / "summary.txt").write_text(
            f"tabs {TABS}; last tab done after {max(timings.values()):.1f} s; server RSS after warm-up "
            f"{rss_start:.0f} MB, after the tabs closed {rss_end:.0f} MB\n")
        assert rss_end - rss_start < 150, (rss_start, rss_end)
