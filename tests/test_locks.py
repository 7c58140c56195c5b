"""attnviz.locks: one re-entrant lock per model, and the time a thread waits for another's."""

from __future__ import annotations

import threading
import time

from torch import nn

from attnviz.locks import lock_wait_seconds, model_lock


def test_one_reentrant_lock_per_model_and_waits_behind_another_thread_are_counted():
    model, other = nn.Linear(2, 2), nn.Linear(2, 2)
    assert model_lock(model) is model_lock(model) and model_lock(model) is not model_lock(other)
    before = lock_wait_seconds()
    with model_lock(model), model_lock(model):  # re-entrant: no wait, nothing counted
        pass
    assert lock_wait_seconds() == before

    held = threading.Event()

    def hold() -> None:
        with model_lock(model):
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    with model_lock(model):
        waited = lock_wait_seconds() - before
    holder.join()
    assert 0.2 < waited < 5.0
    seen_elsewhere = []
    thread = threading.Thread(target=lambda: seen_elsewhere.append(lock_wait_seconds()))
    thread.start()
    thread.join()
    assert seen_elsewhere == [0.0]  # per thread
