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


def test_the_server_skips_the_full_collection_after_every_rerun_and_keeps_uploads_safe(tmp_path):
    # Streamlit's default gc.collect(2) after each script run holds the interpreter lock for the whole
    # collection and stalls every other session's computation (issue 15); uploads stay capped and
    # XSRF-protected. The same snippet outside the repository reads Streamlit's defaults, so the
    # file is what changes them.
    assert _options(REPO) == ["False", "none", "True", "10"]
    assert _options(tmp_path)[0] == "True"
