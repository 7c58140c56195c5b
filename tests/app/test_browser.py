"""A real browser against the real server: upload a picture, see the heat map grid, train one epoch on
the sample set, see the run finish and appear in the Zoo. Screenshots go to test-output/browser/."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from appserver import OUTPUT, app_server, wait_idle
from PIL import Image

pytestmark = pytest.mark.browser


def _png() -> bytes:
    rng = np.random.default_rng(0)
    array = (rng.random((64, 64, 3)) * 80).astype(np.uint8)
    array[16:48, 20:44] = (230, 200, 40)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_inspect_train_and_zoo(tmp_path, browser_page):
    shots = OUTPUT / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser_page
    with app_server(tmp_path / "home") as (base, _):
        # 1. first paint of the entry page
        started = time.perf_counter()
        page.goto(base + "/")
        page.get_by_text("Model zoo").first.wait_for(timeout=60_000)
        first_paint = time.perf_counter() - started
        wait_idle(page)
        page.screenshot(path=str(shots / "1-zoo.png"))

        # 2. upload a picture on Inspect: it replaces the gallery's preselected pictures (issue 12) and
        #    gets its thumbnails and a heat map per model; the broken file gets one sentence
        page.goto(base + "/inspect_image")
        wait_idle(page)
        grid_before = page.locator("[data-testid='stImage']").count()
        page.get_by_role("tab", name="Upload").click()
        page.locator("input[type='file']").first.set_input_files(
            files=[{"name": "yellow-box.png", "mimeType": "image/png", "buffer": _png()},
                   {"name": "broken.png", "mimeType": "image/png", "buffer": b"not a picture at all"}])
        page.get_by_text("yellow-box.png").first.wait_for(timeout=120_000)
        wait_idle(page)
        page.get_by_text("broken.png could not be used").first.wait_for(timeout=60_000)
        models = len(parse_qs(urlparse(page.url).query).get("models", []))  # the choice is in the URL
        grid_after = page.locator("[data-testid='stImage']").count()
        assert models >= 1
        # the upload alone: its prediction thumbnail, its grid thumbnail, one map per model and the
        # deletion/insertion curves of the first picture (one still image)
        assert grid_after == 3 + models and grid_before > grid_after
        page.screenshot(path=str(shots / "2-inspect-upload.png"))
        # the HTML report is rendered only on click (a deferred download): it holds the upload's maps
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download the whole comparison (HTML report)").click()
        report = download.value.path().read_text(encoding="utf-8")
        assert download.value.suggested_filename == "attnviz-comparison.html"
        assert "yellow-box.png" in report and report.count("data:image/png;base64,") == models

        # 3. a 1-epoch run on the sample set, watched live until it finishes
        page.goto(base + "/train")
        wait_idle(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("In the zoo as").first.wait_for(timeout=400_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "3-train-finished.png"))
        assert page.get_by_text("finished").count() >= 1
        # the run's checkpoint on the watched pictures (the gallery's here: this is a fresh session)
        page.get_by_text("Your pictures through this run").first.wait_for(timeout=60_000)

        # 4. the run is in the Zoo
        page.goto(base + "/")
        wait_idle(page)
        page.get_by_text("your run").first.wait_for(state="attached", timeout=60_000)  # a grid cell
        page.screenshot(path=str(shots / "4-zoo-with-run.png"))
    (shots / "first-paint.txt").write_text(f"{first_paint:.2f} s to the first visible title\n")
