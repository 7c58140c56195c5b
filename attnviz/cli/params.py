"""``attnviz params``: measured parameters and FLOPs of every backbone x attention, beside the papers."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    parser = sub.add_parser("params", help="parameters and FLOPs of every backbone x attention, with the papers' figures")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--arch", action="append", help="only these architectures (repeatable)")
    parser.add_argument("--classes", type=int, action="append", help="class counts (default 10 and 100)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from attnviz.errors import SpecError
    from attnviz.models.registry import list_archs
    from attnviz.stats import params_table

    unknown = [a for a in (args.arch or []) if a not in list_archs()]
    if unknown:
        raise SpecError(f"Unknown architecture '{unknown[0]}'; known: {', '.join(list_archs())}.")
    if args.classes and any(c < 1 for c in args.classes):
        raise SpecError("--classes must be positive integers.")
    rows = params_table(archs=args.arch, class_counts=tuple(args.classes or (10, 100)))
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    header = f"{'spec':<36} {'K':>4} {'params (M)':>11} {'MFLOPs':>10} {'paper (M)':>10} {'delta':>7}  source"
    print(header)
    print("-" * len(header))
    for row in rows:
        paper = f"{row['paper_params_m']:.2f}" if row["paper_params_m"] is not None else ""
        delta = f"{row['delta_m']:+.3f}" if row["delta_m"] is not None else ""
        print(f"{row['spec']:<36} {row['num_classes']:>4} {row['params_m']:>11.3f} {row['mflops']:>10.1f} "
              f"{paper:>10} {delta:>7}  {row['paper_source'] or ''}")
    from attnviz.paper_tables import PARAM_NOTES

    shown = {r["spec"].split("-")[0] for r in rows} | {r["spec"] for r in rows}
    notes = [f"- {key}: {text}" for key, text in PARAM_NOTES.items() if key in shown]
    if notes:
        print("\nWhere we differ from the paper by more than 0.02 M:")
        print("\n".join(notes))
    print("\nFLOPs: torch.utils.flop_counter on one 32x32 image (a multiply-add = 2 FLOPs; halve for MACs).")
    return 0
