"""Readings of the studies that measure the zoo's checkpoints (faithfulness, sanity, interventions),
generated from the numbers; :mod:`attnviz.experiments.readings` re-exports them beside the training
studies' readings and ``reading_for``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NO_CHECKPOINT = ("No CIFAR-10 checkpoint was available, so nothing was measured; the study runs once the zoo's "
                 "checkpoints (or your own runs) are present.")


def _join(items: Sequence[str]) -> str:
    """``a, b and c`` (``none`` for no items)."""
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def faithfulness_reading(summary: dict) -> str:
    """``summary[model]`` as built by ``attnviz.experiments.faithfulness.summarise``."""
    if not summary:
        return NO_CHECKPOINT
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


# ---------------------------------------------------------------------------------------------
# sanity


def sanity_reading(summary: dict) -> str:
    """``summary`` as built by ``attnviz.experiments.sanity.summarise`` (plus ``data_randomisation``)."""
    methods = summary.get("methods") or {}
    models = summary.get("models") or {}
    if not models:
        return NO_CHECKPOINT
    sentences = [f"{len(models)} model(s) were re-initialised from the logits down, stage by stage."]
    sentences += _sanity_verdict_sentences(methods)
    optional = [_head_random_sentence(methods), _guided_backprop_sentence(methods),
                _data_randomisation_sentence(summary.get("data_randomisation"))]
    sentences += [sentence for sentence in optional if sentence]
    sentences.append("These are small 32x32 CIFAR networks; the thresholds are ours, the paper judged by eye "
                     "and correlation curves.")
    return " ".join(sentences)


def _scored(methods: dict, names: list[str]) -> list[str]:
    """``method (mean rank correlation with every layer random)`` for the methods that have one."""
    return [f"{m} ({methods[m]['mean_final']:.2f})" for m in names if methods[m]["mean_final"] is not None]


def _sanity_verdict_sentences(methods: dict) -> list[str]:
    """Which methods pass, pass only partly, or fail the cascading test with every layer random."""
    from attnviz.analysis.sanity import FAIL_AT, PASS_BELOW

    passing = [m for m, o in methods.items() if o["passes"] == o["models"]]
    failing = [m for m, o in methods.items() if o["fails"] > 0]
    partly = [m for m, o in methods.items() if m not in passing and m not in failing]
    sentences = []
    if passing:
        sentences.append(f"With every layer random, the maps of {_join(_scored(methods, passing))} no longer rank pixels "
                         f"like the trained model's for any model (mean rank correlation of |map| below {PASS_BELOW:g}): "
                         "they pass.")
    if partly:
        sentences.append(f"{_join(_scored(methods, partly))} changed, but for some models stayed between {PASS_BELOW:g} "
                         f"and {FAIL_AT:g}: only partly sensitive to the weights.")
    if failing:
        parts = [f"{m} for {methods[m]['fails']} of {methods[m]['models']}" for m in failing]
        sentences.append(f"Barely changed (rank correlation {FAIL_AT:g} or more with everything random): {_join(parts)} "
                         "model(s): those maps explain the picture more than the model.")
    return sentences


def _head_random_sentence(methods: dict) -> str | None:
    """Which method's maps changed least with only the head re-initialised."""
    from attnviz.analysis.sanity import FAIL_AT

    heads = {m: o.get("mean_after_head") for m, o in methods.items()
             if o.get("mean_after_head") is not None and not math.isnan(o["mean_after_head"])}
    if not heads:
        return None
    ranked = sorted(heads.items(), key=lambda item: -item[1])
    top, value = ranked[0]
    rest = ", ".join(f"{m} {v:.2f}" for m, v in ranked[1:])
    return (
        f"With only the logits layer (the head) re-initialised, {top}'s maps changed least (mean rank correlation "
        f"{value:.2f}; {rest})"
        + (": like Adebayo et al.'s, Guided Backprop's maps ignore the top of the network and change only once the "
           "lower stages are random." if top == "guided_backprop" and value >= FAIL_AT else ".")
    )


def _guided_backprop_sentence(methods: dict) -> str | None:
    """Guided Backprop with every layer random, against the other methods (Adebayo et al.'s failing case)."""
    if "guided_backprop" not in methods:
        return None
    gb = methods["guided_backprop"]
    finals = {m: o["mean_final"] for m, o in methods.items() if m != "guided_backprop" and o["mean_final"] is not None}
    others = list(finals.values())
    if gb["mean_final"] is None or not others:
        return None
    highest = max(finals, key=finals.get)
    if gb["mean_final"] > max(others):
        return (f"With every layer random Guided Backprop still kept the highest similarity of all "
                f"methods ({gb['mean_final']:.2f}), as Adebayo et al. found for Inception v3.")
    return (f"Once the lower stages are random too it does change ({gb['mean_final']:.2f} with every "
            f"layer random, below {highest}'s {finals[highest]:.2f}), so in these networks its "
            "invariance is to the top layers only.")


def _data_randomisation_sentence(data: dict | None) -> str | None:
    """The least and most similar maps between the true-label and the shuffled-label model."""
    if not (data and data.get("methods")):
        return None
    values = {m: v["spearman_abs"]["mean"] for m, v in data["methods"].items() if v["spearman_abs"]["mean"] is not None}
    if not values:
        return None
    ranked = sorted(values.items(), key=lambda item: item[1])
    memorised = data["shuffled"].get("train_acc")
    return (
        "Data randomisation: between the true-label model and the shuffled-label one"
        + (f" (which fit {100 * memorised:.0f}% of its shuffled training labels)" if memorised is not None else "")
        + f", the least similar maps were {ranked[0][0]}'s ({ranked[0][1]:.2f}) and the most similar "
        f"{ranked[-1][0]}'s ({ranked[-1][1]:.2f})."
    )


# ---------------------------------------------------------------------------------------------
# interventions


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
