"""app/profiling.py: one JSON line per rerun with its phases when ATTNVIZ_PROFILE is set, nothing otherwise."""

from __future__ import annotations

import json
import time

import apphelpers  # noqa: F401  (puts app/ on sys.path)
import pytest


def test_a_rerun_writes_its_phases_only_when_profiling_is_on(tmp_path, monkeypatch):
    import profiling

    monkeypatch.delenv(profiling.PROFILE_ENV, raising=False)
    with profiling.rerun("Inspect an image"), profiling.phase("decode"):
        pass
    assert not list(tmp_path.iterdir())

    path = tmp_path / "runs" / "profile.jsonl"  # its folder is made: the README says runs/profile.jsonl
    monkeypatch.setenv(profiling.PROFILE_ENV, str(path))
    with profiling.rerun("Inspect an image"):
        with profiling.phase("decode"):
            time.sleep(0.05)
        with profiling.phase("decode"), profiling.phase("overlay png"):
            time.sleep(0.02)
    record = json.loads(path.read_text().splitlines()[0])
    assert record["page"] == "Inspect an image" and record["lock_wait_s"] == 0.0
    assert 0.06 < record["phases"]["decode"] < record["total_s"] < 5
    assert 0.015 < record["phases"]["overlay png"] < record["phases"]["decode"]
    with profiling.phase("outside any rerun"):  # no record: a no-op
        pass
    assert len(path.read_text().splitlines()) == 1


def test_worker_threads_add_their_phases_and_lock_waits_to_the_callers_rerun(tmp_path, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import profiling
    from torch import nn

    from attnviz.locks import model_lock

    path = tmp_path / "profile.jsonl"
    monkeypatch.setenv(profiling.PROFILE_ENV, str(path))
    model = nn.Linear(1, 1)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():  # another session holds the model for 0.1 s
        with model_lock(model):
            held.set()
            release.wait(5)

    def work(seconds: float) -> str:
        with profiling.phase("inspect"), model_lock(model):
            time.sleep(seconds)
        return threading.current_thread().name

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(5)
    threading.Timer(0.1, release.set).start()
    with ThreadPoolExecutor(2, thread_name_prefix="worker") as pool, profiling.rerun("Inspect an image"):
        names = list(pool.map(profiling.in_this_rerun(work), [0.03, 0.03]))
    holder.join()
    assert all(name.startswith("worker") for name in names)
    record = json.loads(path.read_text().splitlines()[0])
    assert record["phases"]["inspect"] > 0.06 + 0.05  # both workers' spans, one of them behind the holder
    assert record["lock_wait_s"] > 0.05 and "_lock wait on worker threads" not in record["phases"]


@pytest.mark.slow  # runs models
def test_the_real_inspect_page_is_profiled_phase_by_phase(app, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_PROFILE", str(tmp_path / "profile.jsonl"))
    app.switch_page("views/inspect_image.py").run()
    assert not app.exception
    records = [json.loads(line) for line in (tmp_path / "profile.jsonl").read_text().splitlines()]
    inspect_runs = [r for r in records if r["page"].startswith("Inspect")]
    assert inspect_runs and {"sidebar", "picture inputs", "results", "compare", "decode",
                             "inspect"} <= set(inspect_runs[-1]["phases"])
