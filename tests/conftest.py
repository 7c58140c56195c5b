import os

import pytest
import torch

# Tests share 2 cores with each other's processes; keep torch from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# the app sets torch's threads to ATTNVIZ_THREADS (default 1) once per process; in-process app tests
# would otherwise leave every later test on one thread
os.environ.setdefault("ATTNVIZ_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """User state (runs, caches) goes to a temporary folder, never to ~/.attnviz."""
    monkeypatch.setenv("ATTNVIZ_HOME", str(tmp_path / "attnviz-home"))
    yield
