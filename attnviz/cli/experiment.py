"""``attnviz experiment``: list the studies, or run one (or all) at a budget and write its report.

    attnviz experiment list
    attnviz experiment run NAME|all [--budget tiny|small|full] [--out reports/] [--cifar10 DATASET]

A run resumes by itself: units finished by an earlier (interrupted) run of the same study and budget
are reused. Progress is a tqdm bar on stderr; the report's path is printed on stdout. Exit status: 0
done, 2 bad arguments or a study that cannot run (one line), 130 interrupted (finished units kept).
"""

from __future__ import annotations

import os
import sys


def register(sub) -> None:
    from attnviz.experiments import BUDGETS, STUDIES

    parser = sub.add_parser("experiment", help="re-run the papers' comparisons and write reports")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    listing = actions.add_parser("list", help="the studies and what each budget runs")
    listing.set_defaults(func=run_list)
    runner = actions.add_parser("run", help="run a study and write reports/<study>/")
    runner.add_argument("name", choices=[*STUDIES, "all"], metavar="NAME",
                        help=f"one of {', '.join(STUDIES)}, or all")
    runner.add_argument("--budget", choices=BUDGETS, default="small",
                        help="tiny (seconds, tests), small (default; the shipped reports), full (GPU-sized)")
    runner.add_argument("--out", default="reports", metavar="DIR", help="reports folder (default reports/)")
    runner.add_argument("--cifar10", default=None, metavar="DATASET",
                        help="CIFAR-10 source instead of the default (e.g. imagefolder:/data/cifar10-jpeg.tar.gz)")
    runner.set_defaults(func=run_study)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_list(args) -> int:
    from attnviz.experiments import list_studies

    for study in list_studies():
        print(f"{study.name}: {study.title}")
        print(f"  {study.summary}")
        for budget, text in study.budgets.items():
            print(f"  --budget {budget}: {text}")
    return 0


class _Bar:
    """``progress(done, total, label)`` drawn as one tqdm bar per study."""

    def __init__(self, name: str):
        self.name = name
        self.bar = None

    def __call__(self, done: int, total: int, label: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.name, unit="unit", file=sys.stderr, dynamic_ncols=True)
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(label[:60], refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_study(args) -> int:
    from attnviz.experiments import STUDIES
    from attnviz.experiments import run_study as run_one
    from attnviz.experiments.training import CIFAR_ENV

    if args.cifar10:
        os.environ[CIFAR_ENV] = args.cifar10
    names = list(STUDIES) if args.name == "all" else [args.name]
    for name in names:
        bar = _Bar(name)
        try:
            path = run_one(name, args.budget, args.out, bar)
        finally:
            bar.close()
        print(path)
    return 0
