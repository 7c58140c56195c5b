"""Regenerate the shipped sample set ``attnviz/assets/sample/`` from the CIFAR-10 JPEG tarball.

Usage::

    python scripts/make_sample.py [--source ../shared/datasets/cifar10-jpeg.tar.gz]
                                  [--train-per-class 200] [--test-per-class 50]

The choice is deterministic and independent of the order of members in the archive: within each
split and class, files are ranked by ``sha256("attnviz-sample:" + member path)`` and the lowest ranks
are kept. Files are copied byte for byte (no re-encoding), so the sample pixels are exactly those of
the source archive. Running the script twice produces identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
DEFAULT_OUT = REPO_ROOT / "attnviz" / "assets" / "sample"
SALT = "attnviz-sample:"


def rank_key(member_name: str) -> str:
    return hashlib.sha256((SALT + member_name).encode("utf-8")).hexdigest()


def choose_members(names: list[str], per_split: dict[str, int]) -> set[str]:
    """Pick ``per_split[split]`` files per ``split/class`` with the lowest hash rank."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) != 3 or parts[0] not in per_split or not parts[2].lower().endswith(".jpg"):
            continue
        groups.setdefault((parts[0], parts[1]), []).append(name)
    chosen: set[str] = set()
    for (split, _cls), members in groups.items():
        members.sort(key=rank_key)
        chosen.update(members[: per_split[split]])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=50)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        sys.stderr.write(f"error: {args.source} does not exist\n")
        return 2

    with tarfile.open(args.source, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        names = [m.name.lstrip("./") for m in members]
        chosen = choose_members(names, {"train": args.train_per_class, "test": args.test_per_class})
        for split in ("train", "test"):
            shutil.rmtree(args.out / split, ignore_errors=True)
        for member, name in zip(members, names, strict=True):
            if name not in chosen:
                continue
            target = args.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    total = sum(1 for _ in args.out.rglob("*.jpg"))
    size = sum(p.stat().st_size for p in args.out.rglob("*.jpg"))
    print(f"wrote {total} images ({size / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
