"""One-paragraph readings of the studies' results, generated from the numbers (never hand-written).

Each function takes the study's summary numbers and returns plain sentences that say what was
measured, what differs by more than the run-to-run spread, and what the runs cannot tell. The wording
is deliberately conservative: a difference inside the spread is reported as "not separated", and the
data and budget are named so a small-budget result is not mistaken for the paper's setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from attnviz.experiments.metrics import SPREAD_FACTOR, compare_to_reference

NUM_CLASSES = 10  # CIFAR-10, the data of the modules and interflow studies
CHANCE_MARGIN = 10.0  # points of test error: a run this close to chance did not train


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
    relu_dead, relu_init, felu_dead = [], [], []
    for by_pre in summary.values():
        for cells in by_pre.values():
            if "relu" in cells:
                relu_dead.append(cells["relu"]["dead_relu_final"])
                if "dead_relu_init" in cells["relu"]:
                    relu_init.append(cells["relu"]["dead_relu_init"])
            if "felu" in cells:
                felu_dead.append(cells["felu"]["dead_gradient_final"])
    if relu_dead:
        mean_relu = sum(relu_dead) / len(relu_dead)
        mean_felu = sum(felu_dead) / len(felu_dead) if felu_dead else math.nan
        start = f"{sum(relu_init) / len(relu_init):.0%} before training and " if relu_init else ""
        sentences.append(
            f"Dead excitation units (pre-activation <= 0 for every probe image, averaged over runs and settings): "
            f"{start}{mean_relu:.0%} at the end of training for ReLU, whose dead units pass no gradient; FeLU's "
            f"units kept a gradient ({mean_felu:.0%} gradient-dead at the end)."
        )
        if relu_init and abs(mean_relu - sum(relu_init) / len(relu_init)) < 0.05:
            sentences.append("The dead fraction was already about as high at initialisation, so training itself "
                             "did not make more ReLU units die.")
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
    # A run that ends near chance did not train; its module's mean then says more about
    # optimisation at this recipe than about what the module adds, so name such runs.
    chance_error = 100.0 * (1.0 - 1.0 / NUM_CLASSES)
    stalled = {name: sum(1 for e in s["errors"] if e >= chance_error - CHANCE_MARGIN) for name, s in modules.items()}
    stalled = {name: count for name, count in stalled.items() if count}
    if stalled:
        sentences.append(
            f"Runs that ended within {CHANCE_MARGIN:g} points of chance ({chance_error:.0f}% error), i.e. did not "
            "train: " + _join([f"{name} {count} of {modules[name]['seeds']}" for name, count in stalled.items()])
            + "; those means describe how the module trains with this recipe, not only how well it can do."
        )
    ablations = {"lgam-noladder": "without the ladder of eq. (4)", "lgam-mean": "with a channel mean in eq. (5)"}
    if "lgam" in modules and any(name in modules for name in ablations):
        def stalls(name: str) -> str:
            s = modules[name]
            return (f"{stalled.get(name, 0)} of {s['seeds']} runs stalled, error "
                    f"{s['error_mean']:.2f} ± {s['error_std']:.2f}%")

        parts = [f"{text}: {stalls(name)}" for name, text in ablations.items() if name in modules]
        sentences.append(f"LGAM as the paper defines it: {stalls('lgam')}; " + "; ".join(parts) + ".")
    remedies = {"lgam-zeroinit": "LGAM with zero-initialised residual BN",
                "lgam-mean-zeroinit": "LGAM with zero-init and a channel mean in eq. (5)",
                "sge-4ch": "SGE with at least 4 channels per group",
                "sge-4ch-zeroinit": "SGE with 4+ channels per group and zero-init",
                "none-zeroinit": "the plain network with zero-init (control)"}
    present = [name for name in remedies if name in modules]
    if present:
        def outcome(name: str) -> str:
            s = modules[name]
            text = (f"{remedies[name]}: {stalled.get(name, 0)} of {s['seeds']} stalled, error "
                    f"{s['error_mean']:.2f} ± {s['error_std']:.2f}%")
            saturated = s.get("spatial_saturated_fraction")
            if saturated is not None:
                text += f", {100 * saturated:.0f}% of its spatial-gate values saturated (at 0.5 or 1)"
            return text

        sentences.append("Remedies (issue 11): " + "; ".join(outcome(name) for name in present) + ".")
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


def faithfulness_reading(summary: dict) -> str:
    """``summary[model]`` as built by ``attnviz.experiments.faithfulness.summarise``."""
    if not summary:
        return ("No CIFAR-10 checkpoint was available, so nothing was measured; the study runs once the zoo's "
                "checkpoints (or your own runs) are present.")
    models = len(summary)
    sentences = [f"{models} model(s) were scored."]
    kinds = sorted({k for s in summary.values() for k in s["kinds"]})
    best_ins = {}
    for s in summary.values():
        ranked = sorted(s["kinds"].items(), key=lambda item: -item[1]["insertion"])
        best_ins[ranked[0][0]] = best_ins.get(ranked[0][0], 0) + 1
    leader, count = max(best_ins.items(), key=lambda item: item[1])
    sentences.append(f"The highest insertion AUC came from {leader} for {count} of {models} model(s).")
    for kind in kinds:
        if kind in ("random", "centre"):
            continue
        rows = [s["kinds"][kind] for s in summary.values() if kind in s["kinds"]]
        vs_random = [r.get("deletion_vs_random") for r in rows if r.get("deletion_vs_random")]
        not_better = sum(1 for c in vs_random if not (c["separated"] and c["better"]))
        if vs_random and not_better:
            sentences.append(
                f"{kind}'s deletion AUC was not clearly (by 2 standard errors) better than a random map's for "
                f"{not_better} of {len(vs_random)} model(s)."
            )
    centre_rows = [s["kinds"]["centre"] for s in summary.values() if "centre" in s["kinds"]]
    gradcam_rows = [s["kinds"]["gradcam"] for s in summary.values() if "gradcam" in s["kinds"]]
    if centre_rows and gradcam_rows:
        centre_wins = sum(1 for s in summary.values() if "centre" in s["kinds"] and "gradcam" in s["kinds"]
                          and s["kinds"]["centre"]["insertion"] >= s["kinds"]["gradcam"]["insertion"])
        if centre_wins:
            sentences.append(
                f"A model-blind centred blob matched or beat Grad-CAM's insertion AUC for {centre_wins} of "
                f"{len(gradcam_rows)} model(s): on CIFAR-10, where objects sit in the middle, part of what these "
                "scores reward is the centre prior."
            )
    point = {k: np.mean([s["kinds"][k]["pointing"] for s in summary.values() if k in s["kinds"]]) for k in kinds}
    ranked_point = sorted(((v, k) for k, v in point.items() if k not in ("random", "centre")), reverse=True)
    if ranked_point:
        value, kind = ranked_point[0]
        control = f", against {100 * point['random']:.0f}% for the random control" if "random" in point else ""
        sentences.append(
            f"In the pointing game (chance 25%{control}) the best map on average was {kind} ({100 * value:.0f}% of objects "
            "found in its quadrant); the 2 x 2 mosaics are out of distribution for these models, so this measures "
            "localisation under a shift, not on CIFAR-10 itself."
        )
    n = min(r["n"] for s in summary.values() for r in s["kinds"].values())
    sentences.append(f"Each score averages {n} images; comparisons use paired per-image differences.")
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


def sanity_reading(summary: dict) -> str:
    """``summary`` as built by ``attnviz.experiments.sanity.summarise`` (plus ``data_randomisation``)."""
    from attnviz.analysis.sanity import FAIL_AT, PASS_BELOW

    methods = summary.get("methods") or {}
    models = summary.get("models") or {}
    if not models:
        return ("No CIFAR-10 checkpoint was available, so nothing was measured; the study runs once the zoo's "
                "checkpoints (or your own runs) are present.")
    sentences = [f"{len(models)} model(s) were re-initialised from the logits down, stage by stage."]
    passing = [m for m, o in methods.items() if o["passes"] == o["models"]]
    failing = [m for m, o in methods.items() if o["fails"] > 0]
    partly = [m for m, o in methods.items() if m not in passing and m not in failing]

    def scored(names):
        return [f"{m} ({methods[m]['mean_final']:.2f})" for m in names if methods[m]["mean_final"] is not None]

    if passing:
        sentences.append(f"With every layer random, the maps of {_join(scored(passing))} no longer rank pixels like the "
                         f"trained model's for any model (mean rank correlation of |map| below {PASS_BELOW:g}): they "
                         "pass.")
    if partly:
        sentences.append(f"{_join(scored(partly))} changed, but for some models stayed between {PASS_BELOW:g} and "
                         f"{FAIL_AT:g}: only partly sensitive to the weights.")
    if failing:
        parts = [f"{m} for {methods[m]['fails']} of {methods[m]['models']}" for m in failing]
        sentences.append(f"Barely changed (rank correlation {FAIL_AT:g} or more with everything random): {_join(parts)} "
                         "model(s): those maps explain the picture more than the model.")
    heads = {m: o.get("mean_after_head") for m, o in methods.items()
             if o.get("mean_after_head") is not None and not math.isnan(o["mean_after_head"])}
    if heads:
        ranked = sorted(heads.items(), key=lambda item: -item[1])
        top, value = ranked[0]
        rest = ", ".join(f"{m} {v:.2f}" for m, v in ranked[1:])
        sentences.append(
            f"With only the logits layer (the head) re-initialised, {top}'s maps changed least (mean rank correlation "
            f"{value:.2f}; {rest})"
            + (": like Adebayo et al.'s, Guided Backprop's maps ignore the top of the network and change only once the "
               "lower stages are random." if top == "guided_backprop" and value >= FAIL_AT else ".")
        )
    if "guided_backprop" in methods:
        gb = methods["guided_backprop"]
        finals = {m: o["mean_final"] for m, o in methods.items() if m != "guided_backprop" and o["mean_final"] is not None}
        others = list(finals.values())
        if gb["mean_final"] is not None and others:
            highest = max(finals, key=finals.get)
            if gb["mean_final"] > max(others):
                sentences.append(f"With every layer random Guided Backprop still kept the highest similarity of all "
                                 f"methods ({gb['mean_final']:.2f}), as Adebayo et al. found for Inception v3.")
            else:
                sentences.append(f"Once the lower stages are random too it does change ({gb['mean_final']:.2f} with every "
                                 f"layer random, below {highest}'s {finals[highest]:.2f}), so in these networks its "
                                 "invariance is to the top layers only.")
    data = summary.get("data_randomisation")
    if data and data.get("methods"):
        values = {m: v["spearman_abs"]["mean"] for m, v in data["methods"].items() if v["spearman_abs"]["mean"] is not None}
        if values:
            ranked = sorted(values.items(), key=lambda item: item[1])
            memorised = data["shuffled"].get("train_acc")
            sentences.append(
                "Data randomisation: between the true-label model and the shuffled-label one"
                + (f" (which fit {100 * memorised:.0f}% of its shuffled training labels)" if memorised is not None else "")
                + f", the least similar maps were {ranked[0][0]}'s ({ranked[0][1]:.2f}) and the most similar "
                f"{ranked[-1][0]}'s ({ranked[-1][1]:.2f})."
            )
    sentences.append("These are small 32x32 CIFAR networks; the thresholds are ours, the paper judged by eye "
                     "and correlation curves.")
    return " ".join(sentences)


def interventions_reading(summary: dict, *, data_label: str) -> str:
    """``summary`` as built by ``attnviz.experiments.interventions._write_report`` (``models``, ``checkpoints``)."""
    models = summary.get("models") or {}
    if not models:
        return ("No CIFAR-10 checkpoint with overridable attention was found, so nothing was measured; the study "
                "runs once the zoo's checkpoints are present.")
    sentences = []
    for name, s in models.items():
        largest = s.get("largest_mean")
        if largest is None:
            continue
        site, drop = largest
        separated = s.get("separated_mean") or []
        stages = s.get("stage_mean") or {}
        text = (f"{name} ({100 * s['accuracy']:.1f}% on {s['n_test']} test images): replacing one site's attention by its "
                f"dataset mean cost at most {100 * drop:.1f} points (at {site})")
        text += (f"; {len(separated)} site(s) lost more than 2 standard errors" if separated
                 else "; no single site's loss exceeded 2 standard errors")
        if len(stages) > 1:
            ordered = sorted(stages.items(), key=lambda item: -item[1])
            text += (f"; by stage the largest mean drop was {ordered[0][0]}'s ({100 * ordered[0][1]:.1f}) and the smallest "
                     f"{ordered[-1][0]}'s ({100 * ordered[-1][1]:.1f})")
        everything = s.get("all_mean")
        if everything:
            text += f"; every site at once: {100 * everything['drop']:.1f} points"
        off = s.get("all_ones")
        if off:
            text += f" (all attention off: {100 * off['drop']:.1f})"
        sentences.append(text + ".")
    se_models = {name: s for name, s in models.items() if "-se" in str(s.get("spec", "")) and s.get("stage_ones")}
    for name, s in se_models.items():
        stages = s["stage_ones"]
        per_stage = ", ".join(f"{stage} {100 * value:.1f}" for stage, value in sorted(stages.items()))
        sentences.append(f"{name}, one SE block switched off at a time (mean drop per block, points): {per_stage}.")
    last_least = []
    for s in models.values():
        stages = s.get("stage_ones") or {}
        if len(stages) > 1:
            last = sorted(stages)[-1]
            last_least.append(stages[last] <= min(stages.values()))
    if last_least:
        sentences.append(
            f"Switching attention off hurt the last stage least in {sum(last_least)} of {len(last_least)} model(s): "
            + ("the SE paper's reading that the final stage's recalibration matters least holds here."
               if all(last_least) else "the SE paper's reading (the final stage matters least) holds only partly here.")
        )
    sentences.append(f"Data: {data_label}. Nothing was retrained, so a drop measures what the trained network uses, "
                     "not what a network trained without that site could learn.")
    return " ".join(sentences)
