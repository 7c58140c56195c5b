"""The app's only cache layer: every `st.cache_*` wrapper around an attnviz call lives here.

Why one place: the pages stay thin (widgets in, one call, figures out), and the rules about shared
models are enforced once:
- models are `st.cache_resource` objects shared by every session of the process, loaded once each
  (``LOAD_COUNTS`` proves it), put in ``eval()`` with ``requires_grad_(False)`` and never mutated;
- whatever hooks or back-propagates a shared model (probes, CAMs) takes that model's lock inside the
  attnviz call itself (`attnviz.locks.model_lock`), so nothing here needs to lock;
- heavy results are `st.cache_data` keyed by (model id, image digest, method, ...), so changing a
  display-only setting never reruns a forward pass.
torch-heavy modules are imported inside the functions so that the first paint of a page does not
wait for them.
"""

from __future__ import annotations

import threading
from collections import Counter

import streamlit as st

# model id -> number of times its weights were loaded in this process (the cache makes it 1)
LOAD_COUNTS: Counter[str] = Counter()
_COUNT_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------- activations
@st.cache_data(show_spinner=False, max_entries=256)
def activation_curves(name: str, lo: float, hi: float, n: int = 801):
    """(x, y, dy) arrays of one activation on [lo, hi] (`attnviz.layers.activations.sample_activation`)."""
    from attnviz.layers.activations import sample_activation

    return sample_activation(name, lo, hi, n)


@st.cache_data(show_spinner=False)
def activation_registry() -> dict[str, dict]:
    """name -> {label, latex, in_felu_paper} of every registered activation."""
    from attnviz.layers.activations import ACTIVATIONS

    return {name: {"label": info.label, "latex": info.latex, "in_felu_paper": info.in_felu_paper}
            for name, info in ACTIVATIONS.items()}


@st.cache_data(show_spinner=False)
def felu_minimum() -> tuple[float, float]:
    from attnviz.layers.activations import felu_minimum as _felu_minimum

    return _felu_minimum()
