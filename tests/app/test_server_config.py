"""The settings `streamlit run` reads from the repository's .streamlit/config.toml (the way `make app`, the
Procfile and the cluster start it: from the repository root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

READ = ("from streamlit import config; config.get_config_options(); "
        "print(config.get_option('runner.postScriptGC'), config.get_option('server.fileWatcherType'), "
        "config.get_option('server.enableXsrfProtection'), config.get_option('server.maxUploadSize'))")


def _options(cwd: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", READ], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_server_collects_after_every_rerun_watches_no_files_and_keeps_uploads_safe(tmp_path):
    # The collection after each script run keeps memory flat over many uploads (issue 15; it is cheap
    # because the app freezes its long-lived heap, attnviz.device.settle_heap); uploads stay capped and
    # XSRF-protected. The same snippet outside the repository reads Streamlit's defaults, so the
    # file is what changes them.
    assert _options(REPO) == ["True", "none", "True", "10"]
    assert _options(tmp_path)[1:] != ["none", "True", "10"]
