"""Where a page's rerun spends its time, server-side (issue 15): off unless ``ATTNVIZ_PROFILE`` is set.

With ``ATTNVIZ_PROFILE=FILE``, every script run of every session appends one JSON line to FILE:
``{"page", "session", "total_s", "phases": {name: seconds}, "lock_wait_s", "torch_threads", "at"}``.
``phases`` are the spans a page or the services mark with :func:`phase` (decode, probe, inspect,
overlay, figures, cache lookups...); ``lock_wait_s`` is the time this run waited for a model lock held
by another session (``attnviz.locks.lock_wait_seconds``), which is inside the phases that needed it.
``benchmarks/app_load.py`` turns the file into a breakdown per phase. Unset, :func:`phase` costs one
attribute lookup.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

PROFILE_ENV = "ATTNVIZ_PROFILE"
_current = threading.local()  # the rerun this script thread is in (Streamlit runs each session's script on its own thread)
_write_guard = threading.Lock()
_record_guard = threading.Lock()  # a rerun's worker threads (in_this_rerun) add to its record too
_WORKER_LOCK_WAIT = "_lock wait on worker threads"


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside to the current rerun's ``name`` (nested phases count in both)."""
    record = getattr(_current, "record", None)
    if record is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        with _record_guard:
            record[name] += time.perf_counter() - started


def in_this_rerun(fn):
    """``fn`` wrapped to run on a worker thread as part of the calling script run: with its Streamlit
    context (so caches and the session are this run's) and, when profiling, adding its phases and its
    model-lock waits to this run's record (phases of workers running side by side add up)."""
    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    from attnviz.locks import lock_wait_seconds

    ctx = get_script_run_ctx()
    record = getattr(_current, "record", None)

    def run(*args, **kwargs):
        thread = threading.current_thread()
        add_script_run_ctx(thread, ctx)
        _current.record = record
        waited = lock_wait_seconds()
        try:
            return fn(*args, **kwargs)
        finally:
            if record is not None:
                with _record_guard:
                    record[_WORKER_LOCK_WAIT] += lock_wait_seconds() - waited
            _current.record = None
            add_script_run_ctx(thread, None)  # the pool's thread serves other sessions next

    return run


@contextlib.contextmanager
def rerun(page: str) -> Iterator[None]:
    """One script run of one page (the entry file wraps ``page.run()`` in it)."""
    path = os.environ.get(PROFILE_ENV)
    if not path:
        yield
        return
    from attnviz.locks import lock_wait_seconds

    _current.record = Counter()
    waited_before = lock_wait_seconds()
    started = time.perf_counter()
    try:
        yield
    finally:
        total = time.perf_counter() - started
        record, _current.record = _current.record, None
        with _record_guard:
            worker_waits = record.pop(_WORKER_LOCK_WAIT, 0.0)
            phases = {k: round(v, 6) for k, v in record.items()}
        line = {"page": page, "session": _session_id(), "total_s": round(total, 6), "phases": phases,
                "lock_wait_s": round(lock_wait_seconds() - waited_before + worker_waits, 6),
                "torch_threads": _torch_threads(),
                "at": round(time.time(), 3)}
        with _write_guard:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # e.g. runs/ in a fresh clone
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")


def _session_id() -> str | None:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx.session_id if ctx is not None else None
    except ImportError:
        return None


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to report on it
    return torch.get_num_threads() if torch is not None else None
