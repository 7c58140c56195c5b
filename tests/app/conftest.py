"""Fixtures of the app tests."""

from __future__ import annotations

import pytest
from apphelpers import ENTRY


@pytest.fixture
def app():
    """A fresh AppTest session of the whole app (its own session state, the process's caches)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(ENTRY, default_timeout=240)
