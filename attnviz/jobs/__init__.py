"""Background training runs for the app: one run at a time per run directory, the rest queued, cancellable.

Each run is a separate process, ``python -m attnviz train ... --out RUN_DIR --json-progress``, so a
run can be stopped without touching the server, and a crash in training cannot take the server down.
The child's stdout (one JSON object per event) goes to ``RUN_DIR/progress.jsonl``; the app reads that
file to draw live curves. ``RUN_DIR/job.json`` records the request and the state, so a finished run is
self-describing and a server restart shows what happened to the runs it had.

Rules
- ``submit`` never drops a request: it starts the run when nothing is running, otherwise queues it and
  says so (``state="queued"``, ``position``). A full queue is an error with one sentence.
- ``cancel`` on a queued run removes it; on a running one it sends SIGINT (the trainer stops at the
  next step, keeps a consistent checkpoint and exits 130), then SIGTERM/SIGKILL if it does not stop.
- Runs live in ``runs_dir()`` = ``$ATTNVIZ_HOME/runs`` (default ``~/.attnviz/runs``); the zoo lists
  the checkpoints found there (``attnviz.catalog``).
- Several app processes on one machine may share that directory (``scripts/serve_cluster.py``: app
  processes behind a reverse proxy). They then form one queue: a run starts only when it is the oldest
  queued run of every live process there and its process holds ``RUNS/.training.lock`` (an exclusive
  ``flock``, held while the child runs and released by the kernel if the process dies), so the machine
  trains one model at a time, first come first served. A queued run's ``position`` counts the runs ahead
  of it in every process. Each ``job.json`` names its server (``host:pid``), so a process tells another
  live process's queued or running run from one whose server is gone (``interrupted``).

Uploaded ImageFolder archives are checked before anything trains on them: :mod:`attnviz.archives`.

The package: :mod:`~attnviz.jobs.requests` (``TrainRequest``, ``JobStatus``), :mod:`~attnviz.jobs.queue`
(``TrainingJobs``, ``get_jobs``), :mod:`~attnviz.jobs.progress` (``read_events``, ``summarize``).
"""

from attnviz.jobs.progress import read_events, summarize
from attnviz.jobs.queue import MAX_QUEUE, TrainingJobs, get_jobs
from attnviz.jobs.requests import DATASET_CHOICES, TERMINAL_STATES, JobStatus, TrainRequest
from attnviz.paths import runs_dir  # re-exported: the module had it before it became a package

__all__ = ["DATASET_CHOICES", "MAX_QUEUE", "TERMINAL_STATES", "JobStatus", "TrainRequest", "TrainingJobs",
           "get_jobs", "read_events", "runs_dir", "summarize"]
