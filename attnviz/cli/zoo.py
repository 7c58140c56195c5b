"""``attnviz zoo``: list the checkpoints found; ``zoo train-all`` retrains the shipped zoo (resumable)."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    parser = sub.add_parser("zoo", help="list checkpoints (shipped + $ATTNVIZ_CHECKPOINTS + your runs)")
    zoo_sub = parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    listing = zoo_sub.add_parser("list", help="list checkpoints")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    listing.set_defaults(func=run_list)
    train_all = zoo_sub.add_parser("train-all", help="(re)train every zoo model; skips finished ones, resumes others")
    train_all.add_argument("--data", required=True, help="dataset, e.g. imagefolder:/path/cifar10-jpeg.tar.gz")
    train_all.add_argument("--out", default=None, help="output folder (default: the shipped checkpoints/)")
    train_all.add_argument("--only", action="append", help="only these zoo names (repeatable)")
    train_all.add_argument("--device", default=None)
    train_all.set_defaults(func=run_train_all)
    parser.set_defaults(func=run_list, json=False)


def run_list(args) -> int:
    from attnviz.checkpoints import list_checkpoints_with_problems

    rows, problems = list_checkpoints_with_problems()
    if getattr(args, "json", False):
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        if not rows:
            print("No checkpoints found (shipped folder, $ATTNVIZ_CHECKPOINTS, ~/.attnviz/runs).")
        for row in rows:
            acc = f"{100 * row['test_acc']:.2f}%" if row.get("test_acc") is not None else "n/a"
            params = f"{row['params'] / 1e6:.3f}M" if row.get("params") else "?"
            print(f"{row['name']:<28} {row['spec']:<36} {str(row.get('dataset')):<12} {params:>9} {acc:>8}  {row['path']}")
    for problem in problems:
        sys.stderr.write(f"warning: skipped: {problem}\n")
    return 0


def run_train_all(args) -> int:
    from attnviz.zoo import train_all

    train_all(data=args.data, out_dir=args.out, only=args.only, device=args.device)
    return 0
