"""Fixtures of the app tests."""

from __future__ import annotations

import pytest
from apphelpers import ENTRY


@pytest.fixture
def app():
    """A fresh AppTest session of the whole app (its own session state, the process's caches)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(ENTRY, default_timeout=240)


@pytest.fixture
def browser_page():
    """A page of one headless Debian Chromium (``appserver.CHROMIUM_ARGS``), closed after the test."""
    from appserver import CHROMIUM, CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 2600})
        try:
            yield page
        finally:
            browser.close()


def pytest_collection_modifyitems(config, items):
    """Browser and load tests need Debian's Chromium (``make test`` installs it where it can). Without it
    they are skipped with one line, except in CI (``ATTNVIZ_REQUIRE_BROWSER=1``), where they fail."""
    import os
    from pathlib import Path

    from appserver import CHROMIUM

    if Path(CHROMIUM).exists() or os.environ.get("ATTNVIZ_REQUIRE_BROWSER"):
        return
    skip = pytest.mark.skip(reason=f"Chromium is not installed at {CHROMIUM} (make test installs it where it can)")
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("load"):
            item.add_marker(skip)
