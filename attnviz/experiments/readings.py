"""One-paragraph readings of the studies' results, generated from the numbers (never hand-written).

Each function takes the study's summary numbers and returns plain sentences that say what was
measured, what differs by more than the run-to-run spread, and what the runs cannot tell. The wording
is deliberately conservative: a difference inside the spread is reported as "not separated", and the
data and budget are named so a small-budget result is not mistaken for the paper's setting.

The readings of the studies that measure the zoo's checkpoints (faithfulness, sanity, interventions)
live in :mod:`attnviz.experiments.checkpoint_readings`; they are importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from attnviz.experiments.checkpoint_readings import (  # re-exported, and used by reading_for
    _join,
    faithfulness_reading,
    interventions_reading,
    sanity_reading,
)
from attnviz.experiments.metrics import SPREAD_FACTOR, compare_to_reference

NUM_CLASSES = 10  # CIFAR-10, the data of the modules and interflow studies
CHANCE_MARGIN = 10.0  # points of test error: a run this close to chance did not train
CHANCE_ERROR = 100.0 * (1.0 - 1.0 / NUM_CLASSES)
LGAM_ABLATIONS = {"lgam-noladder": "without the ladder of eq. (4)", "lgam-mean": "with a channel mean in eq. (5)"}
REMEDIES = {"lgam-zeroinit": "LGAM with zero-initialised residual BN",  # issue 11
            "lgam-mean-zeroinit": "LGAM with zero-init and a channel mean in eq. (5)",
            "lgam-gamma": "LGAM with residual BN starting at gamma 0.25",
            "lgam-mean-gamma": "LGAM with residual BN at gamma 0.25 and a channel mean in eq. (5)",
            "sge-4ch": "SGE with at least 4 channels per group",
            "sge-4ch-zeroinit": "SGE with 4+ channels per group and zero-init",
            "none-zeroinit": "the plain network with zero-init (control)"}


def activations_reading(summary: dict, activations: Sequence[str]) -> str:
    """``summary[dataset][preprocessing][activation]`` as built by the activations study."""
    sentences = _felu_sentences(summary) + _dead_unit_sentences(summary)
    sentences.append(
        "Note that the paper's Leaky-ReLU rows give C > D, which its own definitions exclude (C <= D), so "
        "those rows cannot be taken as printed."
    )
    return " ".join(sentences)


def _felu_sentences(summary: dict) -> list[str]:
    """How often FeLU scored the highest metric A, and which activations its last-epoch accuracy is separated from."""
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
    if not felu_cells:
        return []
    sentences = [
        f"FeLU had the highest (or tied-highest) metric A (mean last-epoch validation accuracy) in {felu_best} "
        f"of {felu_cells} data-set/preprocessing combinations run here."
    ]
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
    return sentences


def _dead_unit_sentences(summary: dict) -> list[str]:
    """ReLU's dead excitation units (before and after training) against FeLU's gradient-dead ones."""
    relu_dead, relu_init, felu_dead = [], [], []
    for by_pre in summary.values():
        for cells in by_pre.values():
            if "relu" in cells:
                relu_dead.append(cells["relu"]["dead_relu_final"])
                if "dead_relu_init" in cells["relu"]:
                    relu_init.append(cells["relu"]["dead_relu_init"])
            if "felu" in cells:
                felu_dead.append(cells["felu"]["dead_gradient_final"])
    if not relu_dead:
        return []
    mean_relu = sum(relu_dead) / len(relu_dead)
    mean_felu = sum(felu_dead) / len(felu_dead) if felu_dead else math.nan
    start = f"{sum(relu_init) / len(relu_init):.0%} before training and " if relu_init else ""
    sentences = [
        f"Dead excitation units (pre-activation <= 0 for every probe image, averaged over runs and settings): "
        f"{start}{mean_relu:.0%} at the end of training for ReLU, whose dead units pass no gradient; FeLU's "
        f"units kept a gradient ({mean_felu:.0%} gradient-dead at the end)."
    ]
    if relu_init and abs(mean_relu - sum(relu_init) / len(relu_init)) < 0.05:
        sentences.append("The dead fraction was already about as high at initialisation, so training itself "
                         "did not make more ReLU units die.")
    if mean_relu == 0:
        sentences.append("So in this small network ReLU units did not die, and the paper's motivating problem "
                         "did not arise here.")
    return sentences


def _final_accs(cell: dict) -> list[float]:
    """Last-epoch validation accuracies (%), one per run, as the activations study stores them."""
    return list(cell.get("final_val_accs", []))


def modules_reading(summary: dict, *, data_label: str, epochs: int) -> str:
    """``summary`` as built by ``attnviz.experiments.modules.summarise``."""
    modules = summary["modules"]
    if not modules:
        return "No runs finished."
    sentences = [_error_range_sentence(modules, data_label, epochs)]
    stalled = _stalled_runs(modules)
    optional = [_stalled_sentence(modules, stalled), _lgam_ablation_sentence(modules, stalled),
                _remedies_sentence(modules, stalled), _versus_none_sentence(summary["comparisons"]),
                _felu_versus_se_sentence(summary["comparisons"]), _training_cost_sentence(modules)]
    sentences += [sentence for sentence in optional if sentence]
    if "sample" in data_label or epochs < 30:
        sentences.append(
            "This budget is far from the papers' (full CIFAR-10, long schedules): absolute errors are much higher "
            "and small module effects can be hidden by under-training, so a difference not seen here is not "
            "evidence that it does not exist at full scale."
        )
    return " ".join(sentences)


def _error_range_sentence(modules: dict, data_label: str, epochs: int) -> str:
    """The modules with the lowest and the highest mean test error."""
    seeds = min(s["seeds"] for s in modules.values())
    ranked = sorted(modules.items(), key=lambda item: item[1]["error_mean"])
    best_name, best = ranked[0]
    worst_name, worst = ranked[-1]
    return (
        f"On {data_label} after {epochs} epochs with {seeds} seeds per module, the lowest mean test error was "
        f"{best_name}'s ({best['error_mean']:.2f} ± {best['error_std']:.2f}%) and the highest {worst_name}'s "
        f"({worst['error_mean']:.2f} ± {worst['error_std']:.2f}%)."
    )


def _stalled_runs(modules: dict) -> dict[str, int]:
    """Module -> how many of its runs ended near chance (modules with none are left out)."""
    # A run that ends near chance did not train; its module's mean then says more about
    # optimisation at this recipe than about what the module adds, so name such runs.
    stalled = {name: sum(1 for e in s["errors"] if e >= CHANCE_ERROR - CHANCE_MARGIN) for name, s in modules.items()}
    return {name: count for name, count in stalled.items() if count}


def _stalled_sentence(modules: dict, stalled: dict[str, int]) -> str | None:
    if not stalled:
        return None
    return (
        f"Runs that ended within {CHANCE_MARGIN:g} points of chance ({CHANCE_ERROR:.0f}% error), i.e. did not "
        "train: " + _join([f"{name} {count} of {modules[name]['seeds']}" for name, count in stalled.items()])
        + "; those means describe how the module trains with this recipe, not only how well it can do."
    )


def _stalls(modules: dict, stalled: dict[str, int], name: str) -> str:
    s = modules[name]
    return (f"{stalled.get(name, 0)} of {s['seeds']} runs stalled, error "
            f"{s['error_mean']:.2f} ± {s['error_std']:.2f}%")


def _lgam_ablation_sentence(modules: dict, stalled: dict[str, int]) -> str | None:
    """LGAM as the paper defines it against its ablations (eq. 4 without the ladder, eq. 5 with a mean)."""
    if not ("lgam" in modules and any(name in modules for name in LGAM_ABLATIONS)):
        return None
    parts = [f"{text}: {_stalls(modules, stalled, name)}" for name, text in LGAM_ABLATIONS.items() if name in modules]
    return f"LGAM as the paper defines it: {_stalls(modules, stalled, 'lgam')}; " + "; ".join(parts) + "."


def _remedy_outcome(modules: dict, stalled: dict[str, int], name: str) -> str:
    s = modules[name]
    text = (f"{REMEDIES[name]}: {stalled.get(name, 0)} of {s['seeds']} stalled, error "
            f"{s['error_mean']:.2f} ± {s['error_std']:.2f}%")
    saturated = s.get("spatial_saturated_fraction")
    if saturated is not None:
        text += f", {100 * saturated:.0f}% of its spatial-gate values saturated (at 0.5 or 1)"
    return text


def _remedies_sentence(modules: dict, stalled: dict[str, int]) -> str | None:
    present = [name for name in REMEDIES if name in modules]
    if not present:
        return None
    return "Remedies (issue 11): " + "; ".join(_remedy_outcome(modules, stalled, name) for name in present) + "."


def _versus_none_sentence(comparisons: list[dict]) -> str | None:
    """Which modules beat, lose to, or sit within the seed spread of the plain network."""
    versus_none = [c for c in comparisons if c["reference"] == "none"]
    better = [c["group"] for c in versus_none if c["exceeds"] and c["delta"] < 0]
    worse = [c["group"] for c in versus_none if c["exceeds"] and c["delta"] > 0]
    inside = [c["group"] for c in versus_none if not c["exceeds"]]
    if not versus_none:
        return None
    parts = []
    if better:
        parts.append(f"fewer errors than the plain ResNet-20 by more than {SPREAD_FACTOR:g}x the pooled seed "
                     f"standard deviation: {_join(better)}")
    if worse:
        parts.append(f"more errors by that margin: {_join(worse)}")
    if inside:
        parts.append(f"within the seed-to-seed spread of the plain network: {_join(inside)}")
    return "Compared with no attention, " + "; ".join(parts) + "."


def _felu_versus_se_sentence(comparisons: list[dict]) -> str | None:
    felu = [c for c in comparisons if c["group"] == "se-felu" and c["reference"] == "se"]
    if not felu:
        return None
    c = felu[0]
    verdict = ("exceeds" if c["exceeds"] else "does not exceed")
    return (
        f"SE-FeLU vs SE (the FeLU paper's claim): a difference of {c['delta']:+.2f} points, which {verdict} "
        f"{SPREAD_FACTOR:g}x the pooled spread ({c['pooled_std']:.2f})."
    )


def _training_cost_sentence(modules: dict) -> str | None:
    slowest = max(modules.items(), key=lambda item: item[1]["train_s_per_epoch"] or 0)
    base = modules.get("none")
    if not (base and base["train_s_per_epoch"] and slowest[1]["train_s_per_epoch"]):
        return None
    return (
        f"The costliest module to train was {slowest[0]} ({slowest[1]['train_s_per_epoch'] / base['train_s_per_epoch']:.2f}x "
        "the plain network's time per epoch on this device)."
    )


def interflow_reading(summary: dict, *, data_label: str, epochs: int, weight_lr: str | None = None) -> str:
    """``summary[arch][variant]`` as built by ``attnviz.experiments.interflow.summarise``."""
    sentences = []
    for arch, variants in summary.items():
        if not variants:
            continue
        ranked = sorted(variants.items(), key=lambda item: -item[1]["test_acc_mean"])
        best_name, best = ranked[0]
        worst_name, worst = ranked[-1]
        seeds = min(v["seeds"] for v in variants.values())
        gap = best["test_acc_mean"] - worst["test_acc_mean"]
        spread = max(v["test_acc_std"] for v in variants.values())
        if seeds > 1:
            judged = ("larger" if gap > SPREAD_FACTOR * spread else "not larger")
            spread_text = f", {judged} than {SPREAD_FACTOR:g}x the largest seed std ({spread:.2f})"
        else:
            spread_text = " (one seed each, so no seed spread to judge it against)"
        sentences.append(
            f"{arch}: {best_name} was most accurate ({best['test_acc_mean']:.2f}%) and {worst_name} least "
            f"({worst['test_acc_mean']:.2f}%), a gap of {gap:.2f} points{spread_text}."
        )
        for variant in ("soft", "per_class"):
            c = variants.get(variant, {}).get("claims")
            if c is None:
                continue
            weights = " / ".join(f"{w:+.2f}" for w in c["weights_per_branch"])
            parts = [f"the {variant} weights ended at {weights} (shallow to deep)"]
            parts.append("the shallowest weight was negative and the deepest positive, as claim 3 allows"
                         if c["claim3_shallow_negative_deep_positive"]
                         else "claim 3's pattern (shallow negative, deep positive) did not appear")
            if c["near_zero_branches"]:
                parts.append("branch(es) " + ", ".join(str(i + 1) for i in c["near_zero_branches"])
                             + " got a near-zero weight")
            else:
                parts.append("no branch got a near-zero weight (claims 4-5 describe deeper networks than these)")
            parts.append("the largest weight went to branch " + str(c["largest_weight_branch"] + 1)
                         + (", which was also the most accurate on its own"
                            if c["largest_weight_branch"] == c["best_branch"]
                            else f", while branch {c['best_branch'] + 1} was the most accurate on its own"))
            sentences.append(f"On {arch}, " + "; ".join(parts) + ".")
    lr_text = f" and train at {weight_lr}" if weight_lr else ""
    sentences.append(
        f"These runs ({data_label}, {epochs} epochs) are short; learned weights start at 1/n{lr_text}, so "
        "they move slowly and the weight patterns describe this budget, not converged full-scale training."
    )
    return " ".join(sentences)


def reading_for(report: dict) -> str:
    """The reading of a report.json, regenerated from its numbers (falls back to the stored text).

    The app calls this so that a report written by an older version gets today's wording, while the
    numbers stay the ones the report holds.
    """
    study = report.get("study")
    results = report.get("results") or {}
    detail = (report.get("metadata") or {}).get("budget_detail") or {}
    try:
        if study == "activations":
            activations = [a.strip() for a in str(detail.get("activations", "")).split(",") if a.strip()]
            return activations_reading(results["summary"], activations)
        if study == "modules":
            return modules_reading(results, data_label=str(detail.get("data", "")), epochs=int(detail["epochs"]))
        if study == "interflow":
            return interflow_reading(results, data_label=str(detail.get("data", "")), epochs=int(detail["epochs"]),
                                     weight_lr=detail.get("learned weights' lr"))
        if study == "faithfulness":
            return faithfulness_reading(results)
        if study == "sanity":
            return sanity_reading(results)
        if study == "interventions":
            return interventions_reading(results, data_label=str(detail.get("data", "")))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass
    return str(report.get("reading", ""))
