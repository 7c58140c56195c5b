"""Start the real app server for browser and load tests (a subprocess on a free port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUTPUT = REPO / "test-output"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(home: Path, *, timeout: float = 120.0):
    """``streamlit run app/streamlit_app.py`` with its own ``ATTNVIZ_HOME``; yields (base URL, process)."""
    port = free_port()
    log = open(home.parent / f"streamlit-{port}.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "ATTNVIZ_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app server did not start; see {log.name}")
            time.sleep(0.3)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_idle(page, timeout_s: float = 180.0) -> None:
    """Wait until Streamlit has finished running the script (no 'running' status widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    time.sleep(0.8)
    while time.monotonic() < deadline:
        if page.locator("[data-testid='stStatusWidget']").count() == 0:
            time.sleep(0.5)
            if page.locator("[data-testid='stStatusWidget']").count() == 0:
                return
        time.sleep(0.3)
    raise TimeoutError("the page was still running")


def scores(page) -> list[str]:
    """The caption under every heat map: predicted class, its probability, deletion and insertion AUC."""
    texts = page.locator("[data-testid='stCaptionContainer']").all_inner_texts()
    return sorted(t for t in texts if "deletion" in t and "p=" in t)


def stable_scores(page, timeout_s: float = 300.0) -> list[str]:
    """The heat-map captions once they are there and unchanged for 3 s (the page paints after the run)."""
    deadline = time.monotonic() + timeout_s
    previous, same_for = None, 0
    while time.monotonic() < deadline:
        current = scores(page)
        same_for = same_for + 1 if (current and current == previous) else 0
        if same_for >= 3:
            return current
        previous = current
        time.sleep(1.0)
    return scores(page)
