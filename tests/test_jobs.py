"""The app's training runs (attnviz.jobs): one server's queue, and one queue shared by several servers.

The runs are real: ``python -m attnviz train`` children on a 10-class ImageFolder of 80 pictures.
Two ``TrainingJobs`` managers on one run directory stand for two app processes behind a proxy: they
share the directory exactly as two processes would (a ``flock`` taken through separate open files
conflicts within one process too), and each owns its runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from attnviz.errors import AttnvizError, DatasetError
from attnviz.jobs import TrainingJobs, TrainRequest
from attnviz.paths import SAMPLE_DIR


@pytest.fixture
def small_folder(tmp_path) -> str:
    root = tmp_path / "small"
    for split, count in (("train", 8), ("test", 4)):
        for class_dir in sorted((SAMPLE_DIR / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copy(image, target / image.name)
    return f"imagefolder:{root}"


def _started(jobs: TrainingJobs, job_id: str) -> None:
    """Wait until the worker has started ``job_id`` (it does within milliseconds of an idle submit)."""
    deadline = time.monotonic() + 30
    while jobs.status(job_id).state != "running":
        assert time.monotonic() < deadline, jobs.status(job_id)
        time.sleep(0.01)


def _request(data: str, seed: int = 0) -> TrainRequest:
    return TrainRequest(spec="resnet20", dataset=data, epochs=1, batch_size=20, seed=seed, device="cpu")


@pytest.fixture
def managers(tmp_path):
    made = []

    def make() -> TrainingJobs:
        made.append(TrainingJobs(tmp_path / "runs", cancel_grace_s=10.0))
        return made[-1]

    yield make
    for manager in made:
        manager.shutdown()


@pytest.mark.parametrize("field, value, words", [
    ("spec", "resnet20; rm -rf /", "letters, digits"),
    ("dataset", "imagenet", "Unknown dataset"),
    ("epochs", 0, "Epochs"),
    ("batch_size", 10_000, "batch size"),
    ("lr", -1.0, "learning rate"),
    ("seed", -3, "seed"),
])
def test_a_bad_request_is_refused_in_one_sentence(field, value, words):
    request = TrainRequest(spec="resnet20")
    setattr(request, field, value)
    with pytest.raises((AttnvizError, DatasetError)) as err:
        request.validate()
    message = str(err.value)
    assert words in message and "\n" not in message and message.endswith(".")


@pytest.mark.slow  # real training children
def test_one_server_runs_its_requests_in_order(small_folder, managers):
    jobs = managers()
    first = jobs.submit(_request(small_folder, seed=0))
    _started(jobs, first.job_id)
    second = jobs.submit(_request(small_folder, seed=1))
    assert first.state == "running" and (second.state, second.position) == ("queued", 1)
    done = [jobs.wait(first.job_id, timeout=300), jobs.wait(second.job_id, timeout=300)]
    assert [status.state for status in done] == ["finished", "finished"], [s.message for s in done]
    assert done[0].ended <= done[1].started
    assert any(event.get("event") == "end" for event in done[1].events)
    assert sorted(status.job_id for status in jobs.list_runs()) == sorted([first.job_id, second.job_id])


@pytest.mark.slow  # real training children
def test_two_servers_on_one_run_directory_train_one_model_at_a_time_first_come_first_served(
        small_folder, managers):
    server_a, server_b = managers(), managers()
    a1 = server_a.submit(_request(small_folder, seed=0))
    _started(server_a, a1.job_id)
    b1 = server_b.submit(_request(small_folder, seed=1))
    time.sleep(0.05)
    a2 = server_a.submit(_request(small_folder, seed=2))
    assert a1.state == "running"
    # b1 waits for a1 (another process's run); a2 comes after b1 although a's own queue is empty
    assert (b1.state, b1.position) == ("queued", 1)
    assert (a2.state, a2.position) == ("queued", 2)
    # each server sees the other's live runs as they are, not as interrupted
    seen_by_a = {status.job_id: status.state for status in server_a.list_runs()}
    assert seen_by_a[b1.job_id] == "queued"

    finals = [server_a.wait(a1.job_id, 300), server_b.wait(b1.job_id, 300), server_a.wait(a2.job_id, 300)]
    assert [status.state for status in finals] == ["finished"] * 3, [s.message for s in finals]
    spans = sorted((status.started, status.ended, status.job_id) for status in finals)
    assert [span[2] for span in spans] == [a1.job_id, b1.job_id, a2.job_id]
    for (_, ended, _), (started, _, _) in zip(spans, spans[1:], strict=False):
        assert ended <= started, "two runs trained at the same time"


@pytest.mark.slow  # real training children
def test_a_run_whose_server_is_gone_reads_as_interrupted_and_holds_nothing_up(tmp_path, small_folder, managers):
    jobs = managers()
    run_dir = tmp_path / "runs" / "20261203-000000-resnet20-abcdef"
    run_dir.mkdir(parents=True)
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    assert not os.path.exists(f"/proc/{dead_pid}")
    record = {"job_id": run_dir.name, "state": "running", "request": {"spec": "resnet20"},
              "run_dir": str(run_dir), "submitted": time.time(), "server": f"{socket.gethostname()}:{dead_pid}"}
    (run_dir / "job.json").write_text(json.dumps(record), encoding="utf-8")
    status = jobs.status(run_dir.name)
    assert status.state == "interrupted" and "stopped" in status.message
    mine = jobs.submit(_request(small_folder))
    assert mine.state == "running"
    assert jobs.wait(mine.job_id, timeout=300).state == "finished"
