"""Study 3: Interflow's aggregation — hard vs soft vs per-class (Cai et al., ``interflow.md`` §3.2-3.3).

Interflow adds a prediction branch after every backbone stage (global average pooling + FC) and
aggregates the branches: ``hard`` with hand-set weights, ``soft`` with one learned weight per branch
(the paper's 1 x n convolution), ``per_class`` with one learned weight per branch and class (the
pointwise n x n variant). We train, on ResNet-20 (3 stages) and VGG-16 cut into 4 stages (narrow:
width multiplier 0.25 at the small budget, the paper's full width at the full budget):

- ``hard`` with equal weights (1/n each), and ``hard`` with a hand-set weighting that favours deep
  branches (ResNet-20: 0.1/0.3/0.6; VGG-16: 0.1/0.2/0.3/0.4 — our choice, the paper gives none);
- ``soft`` and ``per_class`` (weights initialised to 1/n; the trainer applies no weight decay to them
  and trains them at 0.1 x the lr, ``Recipe.interflow_weight_lr_scale``: at the full lr they can
  collapse towards 0 early and stall the whole network).

Loss: cross-entropy of the aggregated output only (the zoo's default, ``aux_weight`` 0), so a branch
learns only through its weight in the sum. We measure the test accuracy, each branch's own accuracy
(argmax of its logits), the learned weights at the end and after every epoch (the trainer's
``attention.interflow_branch_weights``), and relate them to the paper's claims (§3.3):

- claim 3: at the end of training, shallow branches' weights may turn negative and deep ones stay
  positive (which slows the shallow layers' fitting and so their over-fitting);
- claim 4: redundant deep stages may get tiny or zero weights (which eases the choice of depth);
- claim 5: stages that harm a very deep network get slight or zero weight (against degradation).
Claims 4-5 concern deep or very deep networks; with 3-4 stages we can only check whether any stage
received a near-zero weight (|w| < 10% of the largest |w|) and whether weights follow the branches'
own accuracies — not the degradation itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnviz.experiments.base import (
    Progress,
    Series,
    StudyRun,
    Table,
    _no_progress,
    check_budget,
    device_label,
    new_figure,
    save_figure,
    training_unit_times,
)
from attnviz.experiments.metrics import mean_std
from attnviz.training import Recipe

STUDY = "interflow"
TITLE = "Interflow's aggregation: hard vs soft vs per-class"
QUESTION = (
    "How do Interflow's aggregations compare (hard with equal or deep-favouring weights, learned soft "
    "and per-class weights) on ResNet-20 and VGG-16, how accurate is each branch on its own, and do the "
    "learned branch weights behave as the paper's claims 3-5 say (negative shallow weights, near-zero "
    "weights for redundant deep stages)?"
)
NEAR_ZERO = 0.1  # |w| below this fraction of the largest |w| counts as "slight or zero"
DEEP_WEIGHTS = {3: (0.1, 0.3, 0.6), 4: (0.1, 0.2, 0.3, 0.4)}
ARCH_STAGES = {"resnet20": 3, "vgg16": 4}
VARIANTS = ("hard-equal", "hard-deep", "soft", "per_class")


def spec_for(arch: str, variant: str, width: float) -> str:
    options = [f"width={width:g}"] if arch == "vgg16" and width != 1.0 else []
    if variant == "hard-deep":
        options.append("hard_weights=" + "/".join(f"{w:g}" for w in DEEP_WEIGHTS[ARCH_STAGES[arch]]))
    mode = "hard" if variant.startswith("hard") else variant
    return f"{arch}-interflow-{mode}" + (":" + ",".join(options) if options else "")


@dataclass(frozen=True)
class InterflowBudget:
    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    per_class: tuple[int, int] | None
    vgg_width: float

    def describe(self, data: str) -> dict:
        return {"data": data, "backbones": ", ".join(self.archs), "VGG-16 width multiplier": self.vgg_width,
                "seeds": len(self.seeds), "epochs": self.epochs, "batch size": self.batch_size,
                "hard-deep weights": "; ".join(f"{a}: {'/'.join(map(str, DEEP_WEIGHTS[ARCH_STAGES[a]]))}"
                                               for a in self.archs),
                "loss": "cross-entropy of the aggregated output (aux_weight 0)",
                "learned weights' lr": f"{Recipe().interflow_weight_lr_scale:g} x the lr, no weight decay"}


BUDGETS = {
    "tiny": InterflowBudget(("resnet20",), (0,), epochs=2, batch_size=64, per_class=(8, 4), vgg_width=0.25),
    "small": InterflowBudget(("resnet20", "vgg16"), (0, 1, 2), epochs=10, batch_size=128, per_class=(200, 50),
                             vgg_width=0.25),
    "full": InterflowBudget(("resnet20", "vgg16"), (0, 1, 2), epochs=30, batch_size=256, per_class=None,
                            vgg_width=1.0),
}


def branch_measurements(dataset, device):
    """A ``measure(model)`` for ``train_unit``: each branch's own test accuracy and the final weights."""
    from attnviz.data import match_channels, preprocess

    def measure(model) -> dict:
        model.eval()
        hits, total = None, 0
        with torch.no_grad():
            for start in range(0, dataset.n_test, 500):
                images = match_channels(dataset.test_images[start:start + 500], model.in_chans).to(device)
                labels = dataset.test_labels[start:start + 500].to(device)
                _, branch_logits = model.forward_with_branches(preprocess(images, dataset.mean, dataset.std))
                correct = (branch_logits.argmax(dim=2) == labels[:, None]).sum(dim=0).cpu()
                hits = correct if hits is None else hits + correct
                total += labels.shape[0]
        weights = model.head.branch_weights.detach().float().cpu()
        return {"branch_acc": (hits.double() / total).tolist(), "branch_weights": weights.tolist(),
                "mode": model.head.mode}

    return measure


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None):
    from attnviz.device import pick_device
    from attnviz.experiments.training import load_cifar, run_training_units

    plan = BUDGETS[check_budget(budget)]
    study = StudyRun(STUDY, TITLE, budget, out_dir, progress or _no_progress)
    dataset, data_label = load_cifar(budget, plan.per_class)
    device = pick_device(None)
    triples = [(a, v, s) for a in plan.archs for v in VARIANTS for s in plan.seeds]
    units = [(f"{a}-{v}-seed{s}", spec_for(a, v, plan.vgg_width), s) for a, v, s in triples]
    outcomes = run_training_units(study, units, dataset, data_label, device, epochs=plan.epochs,
                                  batch_size=plan.batch_size, measure=branch_measurements(dataset, device))
    results: dict[tuple[str, str], list[dict]] = {}
    for (arch, variant, _), result in zip(triples, outcomes, strict=True):
        results.setdefault((arch, variant), []).append(result)
    return _write_report(study, plan, data_label, results, device)


def _weights_per_branch(weights) -> list[float]:
    """Soft/hard: the weights; per_class [n, K]: each branch's mean weight over classes."""
    array = np.asarray(weights, dtype=np.float64)
    return array.tolist() if array.ndim == 1 else array.mean(axis=1).tolist()


def claims(variant: str, final_weights, branch_acc) -> dict:
    """The paper's claims 3-5, checked on one learned model's final weights (see the module docstring)."""
    array = np.asarray(final_weights, dtype=np.float64)
    per_branch = array if array.ndim == 1 else array.mean(axis=1)
    negative_fraction = (array < 0).mean(axis=1).tolist() if array.ndim == 2 else (array < 0).astype(float).tolist()
    largest = float(np.abs(per_branch).max()) if per_branch.size else 0.0
    near_zero = [i for i, w in enumerate(per_branch) if largest > 0 and abs(w) < NEAR_ZERO * largest]
    order_weights = np.argsort(np.argsort(per_branch))
    order_acc = np.argsort(np.argsort(np.asarray(branch_acc)))
    n = len(per_branch)
    spearman = (1 - 6 * float(((order_weights - order_acc) ** 2).sum()) / (n * (n * n - 1))) if n > 1 else None
    return {
        "variant": variant,
        "weights_per_branch": per_branch.tolist(),
        "negative_fraction": negative_fraction,
        "claim3_shallow_negative_deep_positive": bool(per_branch[0] < 0 < per_branch[-1]),
        "any_negative": bool((array < 0).any()),
        "near_zero_branches": near_zero,
        "claim4_deepest_smallest": bool(int(np.argmin(np.abs(per_branch))) == n - 1),
        "largest_weight_branch": int(np.argmax(per_branch)),
        "best_branch": int(np.argmax(branch_acc)),
        "spearman_weight_vs_branch_acc": spearman,
    }


def summarise(results: dict) -> dict:
    out: dict = {}
    for (arch, variant), runs in results.items():
        accs = [100 * r["test_acc"] for r in runs]
        mean, std = mean_std(accs)
        branch_acc = np.mean([r["branch_acc"] for r in runs], axis=0)
        final = np.mean([np.asarray(r["branch_weights"], dtype=np.float64) for r in runs], axis=0)
        over_training = []
        for r in runs:
            curve = [h["attention"]["interflow_branch_weights"] for h in r["history"]
                     if h.get("attention") and h["attention"].get("interflow_branch_weights") is not None]
            over_training.append([_weights_per_branch(w) for w in curve])
        curve_mean = np.mean(np.asarray(over_training, dtype=np.float64), axis=0).tolist() if over_training and \
            over_training[0] else []
        entry = {
            "spec": runs[0]["spec"], "test_acc_mean": mean, "test_acc_std": std, "test_accs": accs,
            "seeds": len(runs), "branch_acc": (100 * branch_acc).tolist(), "final_weights": final.tolist(),
            "weights_over_training": curve_mean, "params": runs[0]["params"],
            "train_s_per_epoch": float(np.mean([r["train_s_per_epoch"] for r in runs if r.get("train_s_per_epoch")]
                                               or [np.nan])),
        }
        if variant in ("soft", "per_class"):
            entry["claims"] = claims(variant, final, branch_acc)
        out.setdefault(arch, {})[variant] = entry
    return out


def _write_report(study: StudyRun, plan: InterflowBudget, data_label: str, results: dict, device):
    from attnviz.experiments.readings import interflow_reading

    summary = summarise(results)
    tables, series, plots = [], [], []
    for arch, variants in summary.items():
        tables.append(_accuracy_table(arch, variants, plan, data_label))
        tables.append(_claims_table(arch, variants))
        series.append(_weights_series(arch, variants))
        plots.append(_plot(study, arch, variants))
    reading = interflow_reading(summary, data_label=data_label, epochs=plan.epochs,
                                weight_lr=plan.describe(data_label)["learned weights' lr"])
    unit_times = training_unit_times(results)
    return study.write(question=QUESTION, budget_detail=plan.describe(data_label), seeds=list(plan.seeds),
                       device=device_label(device), tables=tables, series=series, plots=plots,
                       results=summary, reading=reading, unit_times=unit_times)


def _accuracy_table(arch: str, variants: dict, plan: InterflowBudget, data_label: str) -> Table:
    """One row per aggregation: test accuracy, each branch's own accuracy, the final branch weights."""
    n = ARCH_STAGES[arch]
    rows = []
    for variant in VARIANTS:
        s = variants.get(variant)
        if s is None:
            continue
        weights = _weights_per_branch(s["final_weights"])
        rows.append([variant, s["spec"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}", s["seeds"],
                     *[round(a, 2) for a in s["branch_acc"]], *[round(w, 3) for w in weights]])
    return Table(
        id=f"{arch}-accuracy", title=f"{arch}: accuracy, each branch's own accuracy and final branch weights",
        columns=["aggregation", "spec", "test acc % (mean ± std)", "seeds",
                 *[f"branch {i + 1} acc %" for i in range(n)], *[f"w{i + 1} (end)" for i in range(n)]],
        rows=rows,
        caption=(f"{data_label}; {plan.epochs} epochs, batch {plan.batch_size}. Branch 1 = shallowest stage. "
                 "Weights: soft = the learned weight; per_class = mean over classes of the learned weights; "
                 "hard = the fixed weights."),
        paper={"title": "The paper reports no table for these variants; its claims (§3.3) are checked below.",
               "columns": ["claim", "paper's statement"], "source": "interflow.md §3.3",
               "rows": [["3", "in late training, shallow-stage branch weights may become negative and deep ones "
                              "positive, slowing the shallow layers' fitting (less over-fitting)"],
                        ["4", "redundant deep stages can get tiny or zero weights (eases choosing the depth)"],
                        ["5", "stages that harm very deep networks get slight or zero weights (less degradation)"]]},
    )


def _claims_table(arch: str, variants: dict) -> Table:
    """The learned (soft, per_class) weights held against claims 3-5."""
    rows = []
    for variant in ("soft", "per_class"):
        c = variants.get(variant, {}).get("claims")
        if c is None:
            continue
        rows.append([variant, " / ".join(f"{w:+.3f}" for w in c["weights_per_branch"]),
                     " / ".join(f"{f:.2f}" for f in c["negative_fraction"]),
                     "yes" if c["claim3_shallow_negative_deep_positive"] else "no",
                     ", ".join(str(i + 1) for i in c["near_zero_branches"]) or "none",
                     c["largest_weight_branch"] + 1, c["best_branch"] + 1,
                     round(c["spearman_weight_vs_branch_acc"], 2)
                     if c["spearman_weight_vs_branch_acc"] is not None else None])
    return Table(
        id=f"{arch}-claims", title=f"{arch}: the learned weights against claims 3-5",
        columns=["aggregation", "weights per branch (end)", "fraction negative", "claim 3: w1 < 0 < w_last",
                 "near-zero branches (claims 4-5)", "largest-weight branch", "most accurate branch",
                 "Spearman(weight, branch acc)"],
        rows=rows,
        caption=f"Near zero: |w| < {NEAR_ZERO:g} x the largest |w|. Per_class: weights averaged over classes; "
                "fraction negative = share of a branch's per-class weights below 0.",
    )


def _weight_curves(variants: dict):
    """(variant, branch index, that branch's weight after every epoch) of the learned-weight variants."""
    for variant in ("soft", "per_class"):
        s = variants.get(variant)
        if not s or not s["weights_over_training"]:
            continue
        curve = np.asarray(s["weights_over_training"])
        for b in range(curve.shape[1]):
            yield variant, b, curve[:, b]


def _weights_series(arch: str, variants: dict) -> Series:
    """The learned branch weights after every epoch, one line per (variant, branch)."""
    lines = [{"label": f"{variant} w{b + 1}", "x": list(range(1, len(weights) + 1)), "y": weights.round(6).tolist()}
             for variant, b, weights in _weight_curves(variants)]
    return Series(id=f"{arch}-weights", title=f"{arch}: learned branch weights over training "
                  "(per_class: mean over classes)", x_label="epoch", y_label="weight", lines=lines)


def _plot(study: StudyRun, arch: str, variants: dict) -> dict:
    figure = new_figure(11, 4)
    ax_branch, ax_weights = figure.subplots(1, 2)
    names = [v for v in VARIANTS if v in variants]
    n = ARCH_STAGES[arch]
    width = 0.8 / max(1, len(names))
    for j, variant in enumerate(names):
        accs = variants[variant]["branch_acc"]
        ax_branch.bar(np.arange(n) + j * width, accs, width=width, label=variant)
    ax_branch.set_xticks(np.arange(n) + width * (len(names) - 1) / 2, [f"branch {i + 1}" for i in range(n)])
    ax_branch.set_ylabel("own test accuracy %")
    ax_branch.set_title(f"{arch}: each branch's own accuracy")
    ax_branch.legend(fontsize=8)
    styles = {"soft": "-", "per_class": "--"}
    for variant, b, weights in _weight_curves(variants):
        ax_weights.plot(range(1, len(weights) + 1), weights, styles[variant], marker="o", ms=3,
                        color=f"C{b}", label=f"{variant} w{b + 1}")
    ax_weights.axhline(0, color="#888", lw=0.8)
    ax_weights.set_xlabel("epoch")
    ax_weights.set_ylabel("branch weight")
    ax_weights.set_title("learned weights over training (per_class: class mean)")
    ax_weights.legend(fontsize=7, ncol=2)
    name = save_figure(figure, study.directory / f"{arch}_interflow.png")
    return {"file": name, "title": f"{arch}: branch accuracies and learned weights",
            "caption": "Left: accuracy of each branch's own logits on the test split. Right: soft (solid) and "
                       "per-class (dashed, mean over classes) weights after every epoch; branch 1 is the shallowest."}
