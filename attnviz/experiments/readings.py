"""One-paragraph readings of the studies' results, generated from the numbers (never hand-written).

Each function takes the study's summary numbers and returns plain sentences that say what was
measured, what differs by more than the run-to-run spread, and what the runs cannot tell. The wording
is deliberately conservative: a difference inside the spread is reported as "not separated", and the
data and budget are named so a small-budget result is not mistaken for the paper's setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from attnviz.experiments.metrics import SPREAD_FACTOR, compare_to_reference


def _pct(value: float) -> str:
    return f"{value:.2f}%"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def activations_reading(summary: dict, activations: Sequence[str]) -> str:
    """``summary[dataset][preprocessing][activation]`` as built by the activations study."""
    sentences = []
    felu_best = felu_cells = 0
    separated = []
    for dataset, by_pre in summary.items():
        for preprocessing, cells in by_pre.items():
            if "felu" not in cells or len(cells) < 2:
                continue
            felu_cells += 1
            if cells["felu"]["A"] >= max(c["A"] for c in cells.values()):
                felu_best += 1
            finals = {a: _final_accs(c) for a, c in cells.items()}
            if any(len(v) < 2 for v in finals.values()):
                continue
            for row in compare_to_reference(finals, "felu"):
                if row["exceeds"]:
                    direction = "below" if row["delta"] < 0 else "above"
                    separated.append(f"{row['group']} {direction} FeLU on {dataset}/{preprocessing}")
    if felu_cells:
        sentences.append(
            f"FeLU had the highest (or tied-highest) metric A (mean last-epoch validation accuracy) in {felu_best} "
            f"of {felu_cells} data-set/preprocessing combinations run here."
        )
        if separated:
            sentences.append(
                f"Differences larger than {SPREAD_FACTOR:g}x the pooled run-to-run standard deviation of the "
                f"last-epoch accuracy: {_join(separated)}; every other activation was not separated from FeLU."
            )
        else:
            sentences.append(
                f"No activation's last-epoch accuracy differed from FeLU's by more than {SPREAD_FACTOR:g}x the pooled "
                "run-to-run standard deviation, so these runs do not separate the activations; the paper's table "
                "differences (a few tenths of a percent, single numbers without a spread) are of the same order as "
                "run-to-run noise here."
            )
    relu_dead, felu_dead, worst = [], [], []
    for by_pre in summary.values():
        for cells in by_pre.values():
            if "relu" in cells:
                relu_dead.append(cells["relu"]["dead_relu_final"])
            if "felu" in cells:
                felu_dead.append(cells["felu"]["dead_gradient_final"])
            for activation, cell in cells.items():
                worst.append((cell["dead_gradient_max"], activation))
    if relu_dead:
        mean_relu = sum(relu_dead) / len(relu_dead)
        mean_felu = sum(felu_dead) / len(felu_dead) if felu_dead else math.nan
        sentences.append(
            f"Dead excitation units: at the end of training {mean_relu:.0%} of ReLU's hidden units were dead (pre-"
            f"activation <= 0 for every probe image; averaged over runs and settings) against {mean_felu:.0%} "
            "gradient-dead units for FeLU."
        )
        if mean_relu == 0:
            sentences.append("So in this small network ReLU units did not die, and the paper's motivating problem "
                             "did not arise here.")
    sentences.append(
        "Note that the paper's Leaky-ReLU rows give C > D, which its own definitions exclude (C <= D), so "
        "those rows cannot be taken as printed."
    )
    return " ".join(sentences)


def _final_accs(cell: dict) -> list[float]:
    """Last-epoch validation accuracies (%), one per run, as the activations study stores them."""
    return list(cell.get("final_val_accs", []))


def modules_reading(summary: dict, *, data_label: str, epochs: int) -> str:
    """``summary`` as built by ``attnviz.experiments.modules.summarise``."""
    modules = summary["modules"]
    if not modules:
        return "No runs finished."
    seeds = min(s["seeds"] for s in modules.values())
    ranked = sorted(modules.items(), key=lambda item: item[1]["error_mean"])
    best_name, best = ranked[0]
    worst_name, worst = ranked[-1]
    sentences = [
        f"On {data_label} after {epochs} epochs with {seeds} seeds per module, the lowest mean test error was "
        f"{best_name}'s ({best['error_mean']:.2f} ± {best['error_std']:.2f}%) and the highest {worst_name}'s "
        f"({worst['error_mean']:.2f} ± {worst['error_std']:.2f}%)."
    ]
    versus_none = [c for c in summary["comparisons"] if c["reference"] == "none"]
    better = [c["group"] for c in versus_none if c["exceeds"] and c["delta"] < 0]
    worse = [c["group"] for c in versus_none if c["exceeds"] and c["delta"] > 0]
    inside = [c["group"] for c in versus_none if not c["exceeds"]]
    if versus_none:
        parts = []
        if better:
            parts.append(f"fewer errors than the plain ResNet-20 by more than {SPREAD_FACTOR:g}x the pooled seed "
                         f"standard deviation: {_join(better)}")
        if worse:
            parts.append(f"more errors by that margin: {_join(worse)}")
        if inside:
            parts.append(f"within the seed-to-seed spread of the plain network: {_join(inside)}")
        sentences.append("Compared with no attention, " + "; ".join(parts) + ".")
    felu = [c for c in summary["comparisons"] if c["group"] == "se-felu" and c["reference"] == "se"]
    if felu:
        c = felu[0]
        verdict = ("exceeds" if c["exceeds"] else "does not exceed")
        sentences.append(
            f"SE-FeLU vs SE (the FeLU paper's claim): a difference of {c['delta']:+.2f} points, which {verdict} "
            f"{SPREAD_FACTOR:g}x the pooled spread ({c['pooled_std']:.2f})."
        )
    slowest = max(modules.items(), key=lambda item: item[1]["train_s_per_epoch"] or 0)
    base = modules.get("none")
    if base and base["train_s_per_epoch"] and slowest[1]["train_s_per_epoch"]:
        sentences.append(
            f"The costliest module to train was {slowest[0]} ({slowest[1]['train_s_per_epoch'] / base['train_s_per_epoch']:.2f}x "
            "the plain network's time per epoch on this device)."
        )
    if "sample" in data_label or epochs < 30:
        sentences.append(
            "This budget is far from the papers' (full CIFAR-10, long schedules): absolute errors are much higher "
            "and small module effects can be hidden by under-training, so a difference not seen here is not "
            "evidence that it does not exist at full scale."
        )
    return " ".join(sentences)
