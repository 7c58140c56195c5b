"""Per-model locks: the one rule that keeps shared (cached) models correct under concurrency.

Anything that hooks or back-propagates a model that other threads may use (a probe, a CAM, a
faithfulness metric) holds ``model_lock(model)`` for the whole call. pytorch-grad-cam keeps state in
hook objects and calls ``zero_grad``/``backward`` on the model, and forward hooks registered by one
thread would also see another thread's forward pass, so such calls must not interleave.

The lock is a re-entrant lock (:class:`ModelLock`, a ``threading.RLock`` that counts waits) (``explain`` holds it and calls ``probe`` which takes it
again). Locks live in a ``WeakKeyDictionary`` so a model that is garbage-collected takes its lock
with it; the registry itself is guarded by a global lock so two threads asking for the same model's
lock at once get the same object. :func:`borrowed` is the lock plus eval mode (and, for explanations,
frozen parameters with gradients on), restored exactly on exit. The time a thread spends waiting for
a model lock held by another thread is added up per thread (:func:`lock_wait_seconds`): the app's
profile tells queueing behind another session apart from the model's own work.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator

import torch
from torch import nn

_registry_guard = threading.Lock()
_waits = threading.local()


class ModelLock:
    """A re-entrant lock that adds the time its ``with`` waited to the calling thread's total."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> ModelLock:
        if not self._lock.acquire(blocking=False):  # held by another thread: wait, and count it
            started = time.perf_counter()
            self._lock.acquire()
            _waits.seconds = getattr(_waits, "seconds", 0.0) + time.perf_counter() - started
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


_locks: weakref.WeakKeyDictionary[nn.Module, ModelLock] = weakref.WeakKeyDictionary()


def model_lock(model: nn.Module) -> ModelLock:
    """The re-entrant lock of ``model`` (created on first use, shared by every caller)."""
    with _registry_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = ModelLock()
            _locks[model] = lock
        return lock


def lock_wait_seconds() -> float:
    """Seconds this thread has waited so far for model locks held by other threads."""
    return getattr(_waits, "seconds", 0.0)


@contextlib.contextmanager
def borrowed(model: nn.Module, *, for_gradients: bool = False) -> Iterator[nn.Module]:
    """Use a (possibly shared) model for one call: hold its lock and put every submodule in eval mode.

    ``for_gradients``: also stop the parameters requiring grad (no weight gradient is computed or
    accumulated) and enable gradients, also under a caller's ``torch.no_grad()``,
    ``set_grad_enabled(False)`` or ``inference_mode()`` (an explanation back-propagates to an input or a
    layer). On exit every submodule's mode, every ``requires_grad`` flag and the caller's grad state
    are restored exactly, also after an exception. The one way the library borrows a model: probes,
    explanations, faithfulness metrics and the trainer's evaluation all go through it.
    """
    with model_lock(model), contextlib.ExitStack() as stack:
        if for_gradients:
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
        # Only what differs is recorded and restored (shared app models are already frozen and in
        # eval mode, so this costs next to nothing for them).
        trainable = [p for p in model.parameters() if p.requires_grad] if for_gradients else []
        training = [m for m in model.modules() if m.training]
        try:
            for p in trainable:
                p.requires_grad_(False)
            for m in training:
                m.training = False
            yield model
        finally:
            for p in trainable:
                p.requires_grad_(True)
            for m in training:  # (pytorch-grad-cam's constructor also calls model.eval())
                m.training = True
