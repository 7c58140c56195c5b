"""Every place attnviz reads or writes on disk, defined once.

- ``REPO_ROOT`` / ``SHIPPED_DIR``: the checkout and its shipped ``checkpoints/`` (read-only at run time).
- ``SAMPLE_DIR``: the real CIFAR-10 images shipped in ``attnviz/assets/sample``.
- :func:`attnviz_home`: per-user state, ``$ATTNVIZ_HOME`` or, when unset or empty, ``~/.attnviz``;
  :func:`runs_dir` = its ``runs/`` (the trainer's default output, which ``list_checkpoints`` scans).
- :func:`cache_dir`: decoded datasets and other caches, ``$ATTNVIZ_CACHE`` or ``~/.cache/attnviz``;
  :func:`data_root`: downloaded named datasets, ``$ATTNVIZ_DATA`` or ``cache_dir()/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SHIPPED_DIR = REPO_ROOT / "checkpoints"
SAMPLE_DIR = PACKAGE_DIR / "assets" / "sample"


def attnviz_home() -> Path:
    """Per-user state (runs, caches): ``$ATTNVIZ_HOME`` or, when unset or empty, ``~/.attnviz``."""
    return Path(os.environ.get("ATTNVIZ_HOME") or Path.home() / ".attnviz").expanduser()


def runs_dir() -> Path:
    """Where training runs go (``$ATTNVIZ_HOME/runs``), which ``list_checkpoints`` scans."""
    return attnviz_home() / "runs"


def cache_dir() -> Path:
    """Decoded datasets and caches: ``$ATTNVIZ_CACHE`` or ``~/.cache/attnviz``."""
    return Path(os.environ.get("ATTNVIZ_CACHE") or Path.home() / ".cache" / "attnviz")


def data_root() -> Path:
    """Downloaded named datasets (torchvision): ``$ATTNVIZ_DATA`` or ``cache_dir()/data``."""
    env = os.environ.get("ATTNVIZ_DATA")
    return Path(env) if env else cache_dir() / "data"
