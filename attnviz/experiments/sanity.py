"""Study 5: sanity checks for the explanations (Adebayo et al., NeurIPS 2018) over the zoo.

For every CIFAR-10 checkpoint that ``attnviz.checkpoints.list_checkpoints()`` finds, on fixed test
pictures (the first k test images of each class, stored order; at the small budget from the shipped
sample set unless ``$ATTNVIZ_EXPERIMENT_CIFAR10`` names another CIFAR-10 source):

- the **cascading** model-parameter randomisation test (:func:`attnviz.analysis.sanity.randomisation_test`):
  re-initialise from the logits down, stage by stage (block by block at the full budget), and at every
  depth compare every method's map with the trained model's (Spearman rank correlation of the map and
  of |map|, SSIM of the heat maps) and every attention readout's rank correlation;
- the **independent** test: each stage re-initialised alone;
- the **data-randomisation** test (small and full budgets): one ResNet-20 trained on the shipped
  sample's true labels and one on the same images with shuffled labels (same recipe, no augmentation,
  no weight decay, so the shuffled model can memorise); the maps of the two for the same pictures and
  classes should differ if a method depends on what the labels taught the model.

Verdicts use the thresholds of :mod:`attnviz.analysis.sanity` (mean rank correlation of |map| with the whole
network random: < 0.2 changes = passes, >= 0.5 barely changes = fails). Every unit's config names the
checkpoint and the sha256 of its weights, so the report says exactly which weights it measured and a
rerun with other weights recomputes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from attnviz.experiments.base import Progress, StudyRun, open_study

STUDY = "sanity"
TITLE = "Sanity checks: do the maps change when the weights are randomised?"
QUESTION = (
    "Adebayo et al. (2018): if an explanation barely changes when the network's weights are re-initialised "
    "(from the logits down, or one stage at a time) or when it was trained on shuffled labels, it explains the "
    "picture, not the model. Which of Grad-CAM, Grad-CAM++, Saliency, Guided Backprop and Integrated Gradients "
    "pass for the zoo's models, and how do the attention modules' own readouts behave?"
)
SMALL_METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop", "integrated_gradients")
FULL_METHODS = SMALL_METHODS + ("xgradcam", "layercam", "occlusion")
PLOT_MODEL = "resnet20-se"


@dataclass(frozen=True)
class SanityBudget:
    test_per_class: int
    methods: tuple[str, ...]
    granularity: str
    max_models: int | None
    data_randomisation: dict | None  # {"train_per_class", "epochs", "spec"} or None
    independent_methods: tuple[str, ...] | None = None  # None: the same as the cascading test's

    def methods_for(self, mode: str) -> tuple[str, ...]:
        return self.methods if mode == "cascading" or self.independent_methods is None else self.independent_methods

    def describe(self, data: str) -> dict:
        out = {"data": data, "images": self.test_per_class * 10, "methods": ", ".join(self.methods),
               "independent test's methods": ", ".join(self.methods_for("independent")),
               "randomisation": f"cascading and independent, by {self.granularity}, seed 0",
               "models": "all CIFAR-10 checkpoints found" if self.max_models is None else f"first {self.max_models}"}
        if self.data_randomisation:
            d = self.data_randomisation
            out["data randomisation"] = (f"{d['spec']} trained {d['epochs']} epochs on {d['train_per_class'] * 10} "
                                         "sample training images, true vs shuffled labels")
        return out


BUDGETS = {
    "tiny": SanityBudget(test_per_class=1, methods=("gradcam", "saliency"), granularity="stage", max_models=1,
                         data_randomisation=None),
    # Integrated Gradients (32 steps per map) is the costliest method on a CPU: measured on 10 pictures and 2 cores,
    # 9-13 s of a ResNet-20's 16-21 s cascading test; the small budget runs it in the cascading test only.
    "small": SanityBudget(test_per_class=1, methods=SMALL_METHODS, granularity="stage", max_models=None,
                          data_randomisation={"spec": "resnet20", "train_per_class": 50, "epochs": 30},
                          independent_methods=tuple(m for m in SMALL_METHODS if m != "integrated_gradients")),
    "full": SanityBudget(test_per_class=10, methods=FULL_METHODS, granularity="block", max_models=None,
                         data_randomisation={"spec": "resnet20", "train_per_class": 200, "epochs": 60}),
}


def _round(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def _summary_numbers(result) -> dict:
    summary = result.summary()
    for step in summary["steps"]:
        for method in step["methods"].values():
            for stats in method.values():
                for k in ("mean", "se"):
                    stats[k] = _round(stats[k])
        for stats in step["readouts"].values():
            for k in ("mean", "se"):
                stats[k] = _round(stats[k])
    return summary


def sanity_unit(model, card: dict, images: torch.Tensor, plan: SanityBudget, mode: str, keep_strip: bool) -> dict:
    from attnviz.analysis.sanity import randomisation_test
    from attnviz.data import preprocess

    x = preprocess(images, card["mean"], card["std"])
    result = randomisation_test(model, x, methods=plan.methods_for(mode), mode=mode, granularity=plan.granularity,
                                seed=0)
    out = _summary_numbers(result)
    if keep_strip:  # the first picture's heat maps at every step, for the report's figure (compact: uint8, base64)
        out["strip"] = {m: [_encode_map(step.heatmaps[m][0]) for step in result.steps] for m in result.methods}
    return out


def _encode_map(heat: np.ndarray) -> dict:
    """A [0, 1] heat map as 8-bit levels in base64 (a figure needs no more; keeps the unit JSON small)."""
    import base64

    levels = np.clip(np.round(np.asarray(heat, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return {"shape": list(levels.shape), "uint8_base64": base64.b64encode(levels.tobytes()).decode("ascii")}


def _decode_map(encoded: dict) -> np.ndarray:
    import base64

    levels = np.frombuffer(base64.b64decode(encoded["uint8_base64"]), dtype=np.uint8)
    return levels.reshape(encoded["shape"]).astype(np.float32) / 255.0


def _shuffled(dataset, seed: int):
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(dataset.n_train, generator=generator)
    return replace(dataset, train_labels=dataset.train_labels[permutation].clone())


def data_randomisation_unit(plan: SanityBudget, images: torch.Tensor, work_dir, device) -> dict:
    """Train the true-label and the shuffled-label model, then compare their maps (one unit)."""
    from attnviz.analysis.sanity import compare_models
    from attnviz.data import load_dataset, preprocess
    from attnviz.experiments.training import train_unit
    from attnviz.training import Recipe

    d = plan.data_randomisation
    dataset = load_dataset("sample").subset(train_per_class=d["train_per_class"], test_per_class=None)
    formats = {"precision": "fp32", "memory_format": "contiguous"} if device.type == "cpu" else {}
    recipe = Recipe(epochs=d["epochs"], batch_size=64, seed=0, augment=False, weight_decay=0.0,
                    probe_size=min(256, dataset.n_test), step_event_every=1000, **formats)
    models: dict[str, torch.nn.Module] = {}

    def keep(label):
        def measure(model):
            import copy

            models[label] = copy.deepcopy(model).eval().requires_grad_(False)
            return {}

        return measure

    true = train_unit(d["spec"], dataset, recipe, work_dir, "sanity-true-labels", device, measure=keep("true"))
    shuffled = train_unit(d["spec"], _shuffled(dataset, seed=0), recipe, work_dir, "sanity-shuffled-labels", device,
                          measure=keep("shuffled"))
    x = preprocess(images, dataset.mean, dataset.std)
    similarity = compare_models(models["true"], models["shuffled"], x, methods=plan.methods)

    def final_train_acc(result):
        history = result.get("history") or []
        return history[-1].get("train_acc") if history else None

    return {
        "methods": {m: {metric: {"mean": _round(float(np.nanmean(v))) if np.isfinite(v).any() else None,
                                 "se": _round(float(np.nanstd(v, ddof=1) / math.sqrt(np.isfinite(v).sum())))
                                 if np.isfinite(v).sum() > 1 else None}
                        for metric, v in metrics.items()} for m, metrics in similarity.items()},
        "true": {"test_acc": true["test_acc"], "train_acc": final_train_acc(true), "train_time_s": true["train_time_s"]},
        "shuffled": {"test_acc": shuffled["test_acc"], "train_acc": final_train_acc(shuffled),
                     "train_time_s": shuffled["train_time_s"]},
        "n_train": dataset.n_train, "n_images": int(images.shape[0]),
    }


def _note_source(study: StudyRun, budget: str) -> None:
    """Say in the report which CIFAR-10 source was used when it is not the budget's default (the command
    line in the metadata does not carry ``--cifar10``)."""
    from attnviz.experiments.training import CIFAR_ENV, cifar_source

    source = cifar_source(budget)
    if source != ("cifar10" if budget == "full" else "sample"):
        study.notes.append(f"CIFAR-10 source: {source} (rerun with --cifar10 {source} or ${CIFAR_ENV}={source}).")


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None, *, checkpoint_dirs=None):
    from attnviz.checkpoints import load_checkpoint
    from attnviz.experiments.faithfulness import faithful_set, studied_checkpoints
    from attnviz.experiments.sanity_report import write_report  # it imports this module

    plan, study, dataset, data_label = open_study(STUDY, TITLE, BUDGETS, budget, out_dir, progress)
    progress = study.progress
    images, labels = faithful_set(dataset, plan.test_per_class)
    data_label = f"{data_label.rsplit(': ', 1)[0]}: the first {plan.test_per_class} test images of each class"
    _note_source(study, budget)
    checkpoints = studied_checkpoints(checkpoint_dirs, study.notes, plan.max_models, budget)
    device = torch.device("cpu")
    strip_model = next((e["name"] for e in checkpoints if e["name"] == PLOT_MODEL), checkpoints[0]["name"] if checkpoints else None)
    total = 2 * len(checkpoints) + (1 if plan.data_randomisation else 0)
    done = 0
    results: dict[str, dict] = {}
    used = []
    for entry in checkpoints:
        model, card = load_checkpoint(entry["path"], device=device)
        used.append({"name": entry["name"], "spec": card["spec"], "sha256": entry["sha256"],
                     "test_acc": card["metrics"].get("test_acc"), "dataset": card.get("dataset"),
                     "created": card.get("created")})
        for mode in ("cascading", "independent"):
            progress(done, total, f"{entry['name']}: {mode}")
            keep_strip = mode == "cascading" and entry["name"] == strip_model
            config = {"checkpoint": entry["name"], "sha256": entry["sha256"], "mode": mode,
                      "granularity": plan.granularity, "methods": list(plan.methods_for(mode)), "n": int(labels.numel()),
                      "data": data_label, "seed": 0, "strip": "uint8-base64" if keep_strip else False}
            key = f"{entry['name']}-{entry['sha256'][:12]}-{mode}"
            result = study.units.run(key, config, lambda m=model, c=card, mo=mode, k=keep_strip: sanity_unit(
                m, c, images, plan, mo, k))
            results.setdefault(entry["name"], {"spec": card["spec"]})[mode] = result
            done += 1
    data_random = None
    if plan.data_randomisation:
        progress(done, total, "data randomisation: training two models")
        d = plan.data_randomisation
        config = {"spec": d["spec"], "epochs": d["epochs"], "train_per_class": d["train_per_class"],
                  "methods": list(plan.methods), "n": int(labels.numel()), "data": data_label, "device": device.type,
                  "recipe": "batch 64, no augmentation, no weight decay, seed 0; labels shuffled with seed 0"}
        data_random = study.units.run("data-randomisation", config, lambda: data_randomisation_unit(
            plan, images, study.units.work_dir, device))
        done += 1
    progress(done, total, "writing the report")
    return write_report(study, plan, data_label, results, data_random, used, strip_model, device)


# ---------------------------------------------------------------------------------------------
# the report's numbers (its tables and plots: attnviz.experiments.sanity_report)


def _final(step: dict, method: str, metric: str = "spearman_abs"):
    return step["methods"][method][metric]["mean"]


def summarise(results: dict) -> dict:
    """Per model: the cascading curve and the verdicts; per method: how many models pass / fail."""
    from attnviz.analysis.sanity import verdict

    per_model, per_method = {}, {}
    for name, r in results.items():
        cascade = r["cascading"]
        methods = cascade["methods"]
        final = cascade["steps"][-1]
        head = cascade["steps"][1] if len(cascade["steps"]) > 1 else final
        rows = {}
        for m in methods:
            value = _final(final, m)
            rows[m] = {"after_head": _final(head, m), "final": value, "final_ssim": _final(final, m, "ssim"),
                       "final_spearman": _final(final, m, "spearman"),
                       "verdict": verdict(value) if value is not None else "undefined"}
            per_method.setdefault(m, []).append(rows[m])
        independent = r.get("independent")
        most_sensitive = {}
        if independent:
            for m in [m for m in methods if m in independent["methods"]]:
                values = [(s["label"], _final(s, m)) for s in independent["steps"][1:] if _final(s, m) is not None]
                if values:
                    most_sensitive[m] = min(values, key=lambda item: item[1])
        per_model[name] = {"spec": r["spec"], "labels": [s["label"] for s in cascade["steps"]], "methods": rows,
                           "independent_most_sensitive": most_sensitive}
    overview = {}
    for m, rows in per_method.items():
        finals = [row["final"] for row in rows if row["final"] is not None]
        overview[m] = {"models": len(rows), "passes": sum(row["verdict"] == "changes" for row in rows),
                       "partly": sum(row["verdict"] == "partly" for row in rows),
                       "fails": sum(row["verdict"] == "barely changes" for row in rows),
                       "mean_final": float(np.mean(finals)) if finals else None,
                       "mean_after_head": float(np.mean([row["after_head"] for row in rows
                                                         if row["after_head"] is not None] or [math.nan])),
                       "mean_final_ssim": float(np.mean([row["final_ssim"] for row in rows
                                                         if row["final_ssim"] is not None] or [math.nan]))}
    return {"models": per_model, "methods": overview}
