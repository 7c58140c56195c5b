"""What the Train form asks for (``TrainRequest``, validated, and the exact CLI call that runs it) and
what the app knows of a run (``JobStatus``)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from attnviz.errors import AttnvizError, DatasetError

DATASET_CHOICES = ("sample", "cifar10", "cifar100", "mnist", "fashionmnist")
TERMINAL_STATES = ("finished", "failed", "cancelled", "diverged", "interrupted")


@dataclass
class TrainRequest:
    """What the Train form asks for; ``to_argv`` is the exact CLI call that runs it."""

    spec: str
    dataset: str = "sample"
    epochs: int = 1
    batch_size: int = 128
    lr: float | None = None
    seed: int = 0
    device: str | None = None

    def validate(self) -> None:
        if not self.spec or not re.fullmatch(r"[A-Za-z0-9_.,:=@+\-]+", self.spec):
            raise AttnvizError("The model spec may only use letters, digits and _ . , : = @ + -.")
        if not (self.dataset in DATASET_CHOICES or self.dataset.startswith("imagefolder:")):
            raise DatasetError(f"Unknown dataset '{self.dataset}' (use {', '.join(DATASET_CHOICES)} or an upload).")
        if not 1 <= int(self.epochs) <= 500:
            raise AttnvizError("Epochs must be between 1 and 500.")
        if not 1 <= int(self.batch_size) <= 4096:
            raise AttnvizError("The batch size must be between 1 and 4096.")
        if self.lr is not None and not 0.0 < float(self.lr) <= 10.0:
            raise AttnvizError("The learning rate must be a positive number no larger than 10.")
        if not 0 <= int(self.seed) < 2**31:
            raise AttnvizError("The seed must be a whole number between 0 and 2147483647.")

    def to_argv(self, out_dir: Path) -> list[str]:
        argv = [sys.executable, "-m", "attnviz", "train", "--model", self.spec, "--data", self.dataset,
                "--epochs", str(int(self.epochs)), "--batch-size", str(int(self.batch_size)),
                "--seed", str(int(self.seed)), "--out", str(out_dir), "--json-progress"]
        if self.lr is not None:
            argv += ["--lr", repr(float(self.lr))]
        if self.device:
            argv += ["--device", self.device]
        return argv


@dataclass
class JobStatus:
    """A run as the app sees it (plain values only)."""

    job_id: str
    state: str  # queued | running | finished | failed | cancelled | diverged | interrupted
    request: dict
    run_dir: str
    position: int = 0  # 1-based place in the queue when queued
    submitted: float = 0.0
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    pid: int | None = None
    message: str = ""
    server: str = ""  # host:pid of the app process that owns the run
    events: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES
