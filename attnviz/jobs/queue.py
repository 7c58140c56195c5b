"""The run manager: ``TrainingJobs`` (a FIFO queue and one worker thread per server, one queue for every
process sharing the run directory) and ``get_jobs`` (the process's manager). Rules: :mod:`attnviz.jobs`."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict
from pathlib import Path

from attnviz.errors import AttnvizError
from attnviz.jobs.progress import last_error_line, read_events
from attnviz.jobs.requests import JobStatus, TrainRequest
from attnviz.paths import runs_dir

MAX_QUEUE = 8
CLUSTER_POLL_S = 0.5  # how often a queued run checks whether another process's run ahead of it ended


def _state_from_returncode(code: int, cancelled: bool) -> str:
    if cancelled or code in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
        return "cancelled"
    if code == 0:
        return "finished"
    if code == 3:
        return "diverged"
    return "failed"


class TrainingJobs:
    """The per-server run manager: a FIFO queue and one worker thread that runs one child at a time (and,
    with other processes sharing ``base_dir``, one at a time among them all: see the module text)."""

    def __init__(self, base_dir: str | Path | None = None, *, max_queue: int = MAX_QUEUE,
                 cancel_grace_s: float = 30.0):
        self.base_dir = Path(base_dir) if base_dir is not None else runs_dir()
        self.max_queue = max_queue
        self.cancel_grace_s = cancel_grace_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[str] = deque()
        self._jobs: dict[str, JobStatus] = {}
        self._running: str | None = None
        self._process: subprocess.Popen | None = None
        self._cancel_requested: set[str] = set()
        self._closed = False
        self._server = f"{socket.gethostname()}:{os.getpid()}"
        self._training_lock = None  # the open lock file while this server's child runs (flock held)
        self._others_running = False  # whether another live process sharing base_dir runs a child
        self._worker = threading.Thread(target=self._work, name="attnviz-train-worker", daemon=True)
        self._worker.start()

    # -------------------------------------------------------------------------------- public API
    def submit(self, request: TrainRequest) -> JobStatus:
        """Start ``request`` now, or queue it behind the running one (the returned state says which)."""
        request.validate()
        with self._lock:
            if self._closed:
                raise AttnvizError("The training service is shutting down; try again after the restart.")
            if len(self._queue) >= self.max_queue:
                raise AttnvizError(f"{len(self._queue)} runs are already waiting; cancel one or try again later.")
            job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + re.sub(r"[^A-Za-z0-9_-]+", "_", request.spec)[:40] \
                + "-" + uuid.uuid4().hex[:6]
            run_dir = self.base_dir / job_id
            run_dir.mkdir(parents=True, exist_ok=False)
            status = JobStatus(job_id=job_id, state="queued", request=asdict(request), run_dir=str(run_dir),
                               submitted=time.time(), server=self._server)
            self._jobs[job_id] = status
            self._queue.append(job_id)
            self._reposition()
            self._save(status)
            self._wake.notify_all()
            snapshot = self._snapshot(job_id, with_events=False)
            if self._running is None and status.position == 1 and not self._others_running:
                # the idle worker starts it at once: say so rather than "queued, position 1"
                snapshot.state, snapshot.position = "running", 0
            return snapshot

    def status(self, job_id: str) -> JobStatus:
        """The run's state and every progress event so far; also works for runs of earlier servers."""
        with self._lock:
            if job_id in self._jobs:
                return self._snapshot(job_id)
        return self._from_disk(job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop a queued or running run; returns False when it had already ended."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return False
            self._cancel_requested.add(job_id)
            if job.state == "queued":
                self._queue.remove(job_id)
                job.state, job.ended, job.message = "cancelled", time.time(), "cancelled before it started"
                self._reposition()
                self._save(job)
                return True
            process = self._process if self._running == job_id else None
        if process is not None:
            threading.Thread(target=self._stop_process, args=(process,), daemon=True).start()
        return True

    def running(self) -> str | None:
        with self._lock:
            return self._running

    def queue(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def list_runs(self) -> list[JobStatus]:
        """Every run under ``base_dir`` (this server's and earlier ones), newest first, without events."""
        with self._lock:
            known = {job_id: self._snapshot(job_id, with_events=False) for job_id in self._jobs}
        out = list(known.values())
        if self.base_dir.is_dir():
            for path in self.base_dir.glob("*/job.json"):
                job_id = path.parent.name
                if job_id not in known:
                    try:
                        out.append(self._from_disk(job_id, with_events=False))
                    except AttnvizError:
                        continue
        return sorted(out, key=lambda s: s.submitted, reverse=True)

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the run ends (tests and scripts); returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._jobs[job_id].done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._wake.wait(remaining)
        return self.status(job_id)

    def shutdown(self, cancel_running: bool = True) -> None:
        with self._lock:
            self._closed = True
            for job_id in list(self._queue):
                job = self._jobs[job_id]
                job.state, job.ended, job.message = "cancelled", time.time(), "the server stopped"
                self._save(job)
            self._queue.clear()
            process = self._process
            self._wake.notify_all()
        if cancel_running and process is not None:
            self._stop_process(process)

    # ------------------------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not (self._queue and self._take_turn(self._queue[0])):
                    if self._queue:  # waiting for another process's run: keep the positions true
                        self._reposition()
                    self._wake.wait(CLUSTER_POLL_S if self._queue else None)
                if self._closed:
                    self._release_training_lock()
                    return
                job_id = self._queue.popleft()
                job = self._jobs[job_id]
                self._running = job_id
                job.state, job.started, job.message = "running", time.time(), ""
                self._reposition()
                run_dir = Path(job.run_dir)
                request = TrainRequest(**job.request)
                try:
                    stdout = open(run_dir / "progress.jsonl", "ab")  # noqa: SIM115 - closed below
                    stderr = open(run_dir / "stderr.log", "ab")  # noqa: SIM115
                    self._process = subprocess.Popen(
                        request.to_argv(run_dir), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                except OSError as err:
                    stdout.close()
                    stderr.close()
                    job.state, job.ended, job.message = "failed", time.time(), f"could not start the run: {err}"
                    self._running = None
                    self._release_training_lock()
                    self._save(job)
                    self._wake.notify_all()
                    continue
                job.pid = self._process.pid
                self._save(job)
                process = self._process
            code = process.wait()
            stdout.close()
            stderr.close()
            with self._lock:
                cancelled = job_id in self._cancel_requested
                job.returncode = code
                job.ended = time.time()
                job.state = _state_from_returncode(code, cancelled)
                job.message = last_error_line(run_dir) if job.state != "finished" else ""
                if job.state == "cancelled" and not job.message:
                    job.message = "cancelled; the last consistent checkpoint was kept"
                self._running = None
                self._process = None
                self._release_training_lock()
                self._save(job)
                self._wake.notify_all()

    def _stop_process(self, process: subprocess.Popen) -> None:
        """SIGINT (the trainer saves and exits 130), then SIGTERM, then SIGKILL."""
        for sig, grace in ((signal.SIGINT, self.cancel_grace_s), (signal.SIGTERM, 5.0)):
            if process.poll() is not None:
                return
            try:
                process.send_signal(sig)
                process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return
        if process.poll() is None:
            process.kill()

    # ------------------------------------------------------------- one queue across processes
    def _others_live_runs(self) -> list[JobStatus]:
        """Queued or running runs under ``base_dir`` owned by another live process (or manager)."""
        found = []
        for path in self.base_dir.glob("*/job.json") if self.base_dir.is_dir() else ():
            if path.parent.name in self._jobs:
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue  # being replaced this instant, or not ours to read
            if record.get("state") in ("queued", "running") and _server_alive(str(record.get("server") or "")):
                known = {k: record[k] for k in JobStatus.__dataclass_fields__ if k in record and k != "events"}
                found.append(JobStatus(**known))
        return found

    def _take_turn(self, job_id: str) -> bool:
        """Whether ``job_id`` (this server's head) may start now: no other process's queued run is older,
        and this process got the training lock (so no other process's run is running)."""
        job = self._jobs[job_id]
        if any((other.submitted, other.job_id) < (job.submitted, job_id)
               for other in self._others_live_runs() if other.state == "queued"):
            return False
        self.base_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.base_dir / ".training.lock", "a+b")  # noqa: SIM115 - kept open while the child runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process (or manager) runs its child
            handle.close()
            return False
        self._training_lock = handle
        return True

    def _release_training_lock(self) -> None:
        if self._training_lock is not None:
            self._training_lock.close()  # closing the file releases the flock
            self._training_lock = None

    # ----------------------------------------------------------------------------------- helpers
    def _reposition(self) -> None:
        others = self._others_live_runs()
        self._others_running = any(other.state == "running" for other in others)
        ahead_keys = sorted((other.submitted, other.job_id) for other in others if other.state == "queued")
        for index, job_id in enumerate(self._queue, start=1):
            job = self._jobs[job_id]
            job.position = index + sum(1 for key in ahead_keys if key < (job.submitted, job_id))
        if self._running is not None:
            self._jobs[self._running].position = 0

    def _snapshot(self, job_id: str, with_events: bool = True) -> JobStatus:
        job = self._jobs[job_id]
        copy = JobStatus(**{k: v for k, v in asdict(job).items() if k != "events"})
        if with_events:
            copy.events = read_events(job.run_dir)
        return copy

    def _save(self, job: JobStatus) -> None:
        record = {k: v for k, v in asdict(job).items() if k != "events"}
        path = Path(job.run_dir) / "job.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def _from_disk(self, job_id: str, with_events: bool = True) -> JobStatus:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_id):
            raise AttnvizError(f"'{job_id}' is not a run id.")
        run_dir = self.base_dir / job_id
        try:
            record = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise AttnvizError(f"There is no run '{job_id}' in {self.base_dir}.") from err
        known = {k: record[k] for k in JobStatus.__dataclass_fields__ if k in record and k != "events"}
        status = JobStatus(**known)
        if not status.done and not _server_alive(status.server):
            # a run recorded as queued/running by a server that is gone: it will never finish
            status.state, status.message = "interrupted", "the server that ran it stopped before it finished"
        if with_events:
            status.events = read_events(run_dir)
        return status


def _server_alive(server: str) -> bool:
    """Whether the app process ``host:pid`` still runs. Only processes of this machine are seen (the
    shared queue is for processes on one machine); a record without a server is an earlier version's."""
    host, _, pid = server.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


_MANAGERS: dict[Path, TrainingJobs] = {}
_MANAGER_LOCK = threading.Lock()


def get_jobs() -> TrainingJobs:
    """The process-wide run manager for ``runs_dir()`` (a server has one home, so one run at a time)."""
    base = runs_dir()
    with _MANAGER_LOCK:
        if base not in _MANAGERS:
            _MANAGERS[base] = TrainingJobs(base)
        return _MANAGERS[base]
