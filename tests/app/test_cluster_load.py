"""Load: browser sessions through nginx in front of two real app processes (attnviz.cluster).

Checks: the sessions are spread over both processes; every session shows the same scored heat maps
(the numbers of one process equal the other's); an upload works through the proxy (the upload, the
XSRF cookie and the media it shows all reach the session's own process); no page shows an error.
"""

from __future__ import annotations

import socket
import time

import pytest
from appserver import CHROMIUM, CHROMIUM_ARGS, OUTPUT, free_port, scores, stable_scores, wait_idle

from attnviz.cluster import Cluster
from attnviz.paths import SAMPLE_DIR

pytestmark = pytest.mark.load
SESSIONS = 4


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free (the app processes' ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_sessions_spread_over_two_app_processes_behind_nginx(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = OUTPUT / "cluster"
    out.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(processes=2, port=free_port(), base_port=_two_free_ports(), home=tmp_path / "home",
                      state_dir=tmp_path / "cluster")
    with cluster, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = [browser.new_context(viewport={"width": 1400, "height": 2400}) for _ in range(SESSIONS)]
        pages = [context.new_page() for context in contexts]
        served_by = [page.goto(cluster.url + "/inspect_image").headers["x-attnviz-backend"] for page in pages]
        assert sorted(set(served_by)) == [f"127.0.0.1:{port}" for port in cluster.backend_ports], served_by

        shown = []
        for page in pages:
            wait_idle(page, 400)
            shown.append(stable_scores(page))
            assert not page.locator("[data-testid='stException']").count()
        assert shown[0] and len(shown[0]) % 3 == 0  # 3 gallery pictures x the chosen models
        assert all(numbers == shown[0] for numbers in shown), shown

        page = pages[1]
        models = len(shown[0]) // 3
        picture = sorted((SAMPLE_DIR / "test").glob("*/*.jpg"))[7]
        page.locator("input[type='file']").first.set_input_files(str(picture))
        deadline = time.monotonic() + 300
        while not (len(scores(page)) == models and page.get_by_text(picture.name).count()):
            assert time.monotonic() < deadline, "the upload's heat maps never appeared through the proxy"
            time.sleep(0.2)
        wait_idle(page, 300)
        assert not page.locator("[data-testid='stException']").count()
        # the pictures the page shows are media of the session's own process: each one loaded
        loaded = page.evaluate("() => [...document.querySelectorAll('img')].filter(i => i.src.includes('/media/'))"
                               ".map(i => i.complete && i.naturalWidth > 0)")
        assert len(loaded) >= models + 1 and all(loaded), loaded
        page.screenshot(path=str(out / "upload-through-proxy.png"), full_page=True)
        (out / "summary.txt").write_text(f"sessions {SESSIONS}, served by {served_by}\n")
        browser.close()
