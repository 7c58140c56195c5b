"""Per-model locks: the one rule that keeps shared (cached) models correct under concurrency.

Anything that hooks or back-propagates a model that other threads may use (a probe, a CAM, a
faithfulness metric) holds ``model_lock(model)`` for the whole call. pytorch-grad-cam keeps state in
hook objects and calls ``zero_grad``/``backward`` on the model, and forward hooks registered by one
thread would also see another thread's forward pass, so such calls must not interleave.

The lock is a re-entrant ``threading.RLock`` (``explain`` holds it and calls ``probe`` which takes it
again). Locks live in a ``WeakKeyDictionary`` so a model that is garbage-collected takes its lock
with it; the registry itself is guarded by a global lock so two threads asking for the same model's
lock at once get the same object.
"""

from __future__ import annotations

import threading
import weakref

from torch import nn

_registry_guard = threading.Lock()
_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` (created on first use, shared by every caller)."""
    with _registry_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = threading.RLock()
            _locks[model] = lock
        return lock
