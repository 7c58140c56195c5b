"""Study 2: attention modules compared on ResNet-20 (LGAM paper table 3; FeLU paper tables 3-4).

The papers compare modules with one number each (one run, different backbones and schedules: LGAM
table 3 uses ResNet-18, the FeLU paper a deeper ResNet). Here every module sits in the same
ResNet-20 (inside each residual block, before the addition; BAM after stages 1-2 as in its paper),
trained with one recipe (``attnviz.training.Recipe``: SGD-Nesterov, one-cycle, batch and epochs per
budget, crop+flip augmentation) with several seeds, so each module gets a mean and a standard
deviation of its test error, and a difference is only called a difference when it exceeds the
seed-to-seed spread: ``|mean_module - mean_reference| > 2 x pooled std`` (see
:func:`attnviz.experiments.metrics.compare_to_reference`). References: the plain ResNet-20 for every
module, and SE for SE-FeLU (the FeLU paper's claim). The small and full budgets add two LGAM ablations
(``ABLATIONS``: no ladder; channel mean instead of sum in the spatial gate) to show which of LGAM's
amplifying choices makes it hard to train with this recipe.

Costs: parameters (``count_params``), FLOPs per image (``count_flops``, multiply-add = 2), training
seconds per epoch (the trainer's per-epoch ``time_s``, training steps only) and inference seconds
per epoch (one pass over the test split, batches of 500, float32, after a warm-up), both on the
device the study ran on. Timings on a shared machine are noisy; they are reported per seed-mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.experiments.base import (
    Progress,
    Series,
    StudyRun,
    Table,
    _no_progress,
    check_budget,
    device_label,
    new_figure,
    paper_table,
    save_figure,
    training_unit_times,
)
from attnviz.experiments.metrics import compare_to_reference, mean_std

STUDY = "modules"
TITLE = "Attention modules compared on ResNet-20"
QUESTION = (
    "With one backbone (ResNet-20), one recipe and several seeds, which attention modules lower the "
    "CIFAR-10 test error by more than the seed-to-seed spread, and at what cost in parameters, FLOPs "
    "and time?"
)
MODULES = ("none", "se", "se-felu", "lgam", "cbam", "bam", "sge", "eca")
# Ablations of LGAM's two amplifying choices (see attnviz/layers/lgam.py): without the ladder of eq. (4),
# each group's output no longer feeds (and multiplies into) the next; with a channel mean instead of
# eq. (5)'s sum, the spatial gate is not pushed into saturation by wide layers.
ABLATIONS = {"lgam-noladder": "resnet20-lgam:ladder=false", "lgam-mean": "resnet20-lgam:spatial_reduce=mean"}
# Remedies for the two modules that lag (issue 11), each keeping the paper's module and changing one
# thing: zero-initialised residual BN (Goyal et al. 2017: every block starts as the identity, so LGAM's
# amplification cannot compound at initialisation), LGAM's channel mean in eq. (5) on top of that, and
# SGE with at least 4 channels per group (its G = 64 leaves 1 channel per group on 16-64 channels).
# ``none-zeroinit`` is the control: what zero-init does to the plain network. Zero-init slows the plain
# network's start (none-zeroinit), so ``lgam-gamma``/``lgam-mean-gamma`` start the residual BN at gamma
# 0.25 instead (``residual_bn_gamma``): LGAM's ~5x gain then brings its branch near a plain branch's
# scale at initialisation (stage-3 std 1.05 vs the plain network's 1.17: scripts/init_scale_probe.py) rather than to zero.
REMEDIES = {
    "none-zeroinit": "resnet20:zero_init_residual=true",
    "lgam-zeroinit": "resnet20-lgam:zero_init_residual=true",
    "lgam-mean-zeroinit": "resnet20-lgam:spatial_reduce=mean,zero_init_residual=true",
    "lgam-gamma": "resnet20-lgam:residual_bn_gamma=0.25",
    "lgam-mean-gamma": "resnet20-lgam:spatial_reduce=mean,residual_bn_gamma=0.25",
    "sge-4ch": "resnet20-sge:min_group_channels=4",
    "sge-4ch-zeroinit": "resnet20-sge:min_group_channels=4,zero_init_residual=true",
}
# A spatial gate value this close to one of its bounds counts as saturated (sigmoid(relu(.)) lies in [0.5, 1]).
SATURATION_TOLERANCE = 1e-3


def spec_of(module: str) -> str:
    if module in ABLATIONS:
        return ABLATIONS[module]
    if module in REMEDIES:
        return REMEDIES[module]
    return "resnet20" if module == "none" else f"resnet20-{module}"


@dataclass(frozen=True)
class ModulesBudget:
    modules: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    per_class: tuple[int, int] | None

    def describe(self, data: str) -> dict:
        return {"data": data, "modules": ", ".join(self.modules), "seeds": len(self.seeds),
                "epochs": self.epochs, "batch size": self.batch_size,
                "recipe": "SGD-Nesterov 0.9, one-cycle (lr 0.2 x batch/256), weight decay 5e-4, crop+flip"}


BUDGETS = {
    "tiny": ModulesBudget(("none", "se", "se-felu"), (0, 1, 2), epochs=1, batch_size=64, per_class=(8, 4)),
    "small": ModulesBudget(MODULES + tuple(ABLATIONS) + tuple(REMEDIES), (0, 1, 2), epochs=10, batch_size=128,
                           per_class=(200, 50)),
    "full": ModulesBudget(MODULES + tuple(ABLATIONS) + tuple(REMEDIES), (0, 1, 2, 3, 4), epochs=30, batch_size=256,
                          per_class=None),
}


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None):
    from attnviz.device import pick_device
    from attnviz.experiments.training import load_cifar, run_training_units

    plan = BUDGETS[check_budget(budget)]
    study = StudyRun(STUDY, TITLE, budget, out_dir, progress or _no_progress)
    dataset, data_label = load_cifar(budget, plan.per_class)
    device = pick_device(None)
    pairs = [(m, s) for m in plan.modules for s in plan.seeds]
    outcomes = run_training_units(study, [(f"{spec_of(m)}-seed{s}", spec_of(m), s) for m, s in pairs], dataset,
                                  data_label, device, epochs=plan.epochs, batch_size=plan.batch_size,
                                  measure=lambda model: spatial_saturation(model, dataset))
    results: dict[str, list[dict]] = {}
    for (module, _), result in zip(pairs, outcomes, strict=True):
        results.setdefault(module, []).append(result)
    return _write_report(study, plan, data_label, results, device)


def spatial_saturation(model, dataset, images: int = 200) -> dict:
    """Fraction of LGAM spatial-gate values within ``SATURATION_TOLERANCE`` of 0.5 or 1 (first test images).

    ``{}`` for models without LGAM. Units trained before this was measured have no such field.
    """
    import torch

    from attnviz.analysis.probes import probe
    from attnviz.data import preprocess

    if not any(getattr(m, "attn_kind", None) == "lgam" for m in model.modules()):
        return {}
    batch = preprocess(dataset.test_images[:images], dataset.mean, dataset.std)
    result = probe(model, batch.to(next(model.parameters()).device))
    maps = [site.spatial.float() for site in result.sites.values() if getattr(site, "spatial", None) is not None]
    values = torch.cat([m.flatten() for m in maps])
    saturated = ((values - 0.5).abs() < SATURATION_TOLERANCE) | ((values - 1.0).abs() < SATURATION_TOLERANCE)
    return {"spatial_saturated_fraction": float(saturated.float().mean())}


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per module: error mean/std (%), per-seed errors, costs; plus the spread comparisons."""
    summary = {}
    for module, runs in results.items():
        errors = [100.0 * (1.0 - r["test_acc"]) for r in runs]
        mean, std = mean_std(errors)
        train_s = [r["train_s_per_epoch"] for r in runs if r.get("train_s_per_epoch") is not None]
        infer_s = [r["inference_s_per_epoch"] for r in runs if r.get("inference_s_per_epoch") is not None]
        curves = [[h["test_acc"] for h in r["history"]] for r in runs if r.get("history")]
        summary[module] = {
            "spec": runs[0]["spec"], "errors": errors, "error_mean": mean, "error_std": std, "seeds": len(runs),
            "params": runs[0]["params"], "flops": runs[0]["flops"],
            "train_s_per_epoch": float(np.mean(train_s)) if train_s else None,
            "inference_s_per_epoch": float(np.mean(infer_s)) if infer_s else None,
            "test_acc_curve": np.mean(np.array(curves), axis=0).round(6).tolist() if curves else [],
            "spatial_saturated_fraction": _mean_of(runs, "spatial_saturated_fraction"),
        }
    errors = {m: s["errors"] for m, s in summary.items()}
    comparisons = compare_to_reference(errors, "none") if "none" in errors else []
    if "se" in errors and "se-felu" in errors:
        comparisons += [c for c in compare_to_reference({"se": errors["se"], "se-felu": errors["se-felu"]}, "se")]
    return {"modules": summary, "comparisons": comparisons}


def _mean_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _write_report(study: StudyRun, plan: ModulesBudget, data_label: str, results: dict, device):
    from attnviz.experiments.readings import modules_reading
    from attnviz.paper_tables import FELU_TABLE3_ERROR, FELU_TABLE4_TIME_S, LGAM_TABLE3_ERROR

    summary = summarise(results)
    modules = summary["modules"]
    base = modules.get("none")
    rows = []
    for module in plan.modules:
        s = modules.get(module)
        if s is None:
            continue
        rel_train = (s["train_s_per_epoch"] / base["train_s_per_epoch"]) if base and base["train_s_per_epoch"] else None
        rel_infer = (s["inference_s_per_epoch"] / base["inference_s_per_epoch"]) if base and base["inference_s_per_epoch"] else None
        rows.append([module, s["spec"], f"{s['error_mean']:.2f} ± {s['error_std']:.2f}", s["seeds"],
                     round(s["params"] / 1e6, 4), round(s["flops"] / 1e6, 2) if s["flops"] else None,
                     round(s["train_s_per_epoch"], 2) if s["train_s_per_epoch"] else None,
                     round(rel_train, 2) if rel_train else None,
                     round(s["inference_s_per_epoch"], 3) if s["inference_s_per_epoch"] else None,
                     round(rel_infer, 2) if rel_infer else None])
    paper_rows = [[m, LGAM_TABLE3_ERROR[m][0], LGAM_TABLE3_ERROR[m][1]] for m in plan.modules if m in LGAM_TABLE3_ERROR]
    paper_rows += [[name, err[0], err[1]] for name, err in FELU_TABLE3_ERROR.items()]
    tables = [Table(
        id="errors", title="Test error and costs per module (ResNet-20)",
        columns=["module", "spec", "test error % (mean ± std)", "seeds", "params (M)", "MFLOPs / image",
                 "train s / epoch", "train time vs none", "inference s / epoch", "inference vs none"],
        rows=rows,
        caption=(f"{data_label}; {plan.epochs} epochs, batch {plan.batch_size}, seeds {list(plan.seeds)}; "
                 f"device: {device_label(device)}. Error: 100 - test accuracy (%), sample std over seeds. Times: "
                 "training steps per epoch and one pass over the test split, mean over seeds."),
        paper=paper_table("Test error % (CIFAR-10, CIFAR-100), one run each; LGAM rows: ResNet-18; FeLU rows: "
                          "the FeLU paper's ResNet (table 3)", ["module / model", "CIFAR-10", "CIFAR-100"],
                          paper_rows, "LGAM table 3; FeLU table 3"),
    )]
    comp_rows = [[c["group"], c["reference"], round(c["delta"], 2), round(c["pooled_std"], 2),
                  round(c["ratio"], 2) if c["ratio"] is not None else None, "yes" if c["exceeds"] else "no"]
                 for c in summary["comparisons"]]
    tables.append(Table(
        id="differences", title="Which differences exceed the seed-to-seed spread?",
        columns=["module", "vs", "Δ error (points)", "pooled std", "|Δ| / pooled std", "exceeds 2 x pooled std"],
        rows=comp_rows,
        caption="Δ = mean error of the module minus the reference's (negative = fewer errors). A screen, not a "
                "significance test: with 3 seeds only large effects pass.",
        paper=paper_table("Training / test time (s), CIFAR-10 and CIFAR-100", ["model", "C10 train", "C10 test",
                          "C100 train", "C100 test"], [[k, *v] for k, v in FELU_TABLE4_TIME_S.items()], "FeLU table 4"),
    ))
    series = [Series(id="test-acc", title="Test accuracy over training (mean over seeds)", x_label="epoch",
                     y_label="test accuracy",
                     lines=[{"label": m, "x": list(range(1, len(s["test_acc_curve"]) + 1)), "y": s["test_acc_curve"]}
                            for m, s in modules.items()])]
    plots = [_plot(study, plan, modules)]
    reading = modules_reading(summary, data_label=data_label, epochs=plan.epochs)
    unit_times = training_unit_times(results)
    return study.write(question=QUESTION, budget_detail=plan.describe(data_label), seeds=list(plan.seeds),
                       device=device_label(device), tables=tables, series=series, plots=plots,
                       results=summary, reading=reading, unit_times=unit_times)


def _plot(study: StudyRun, plan: ModulesBudget, modules: dict) -> dict:
    figure = new_figure(11, 4)
    ax_err, ax_curve = figure.subplots(1, 2)
    names = [m for m in plan.modules if m in modules]
    means = [modules[m]["error_mean"] for m in names]
    stds = [modules[m]["error_std"] for m in names]
    ax_err.bar(range(len(names)), means, yerr=stds, capsize=4, color="#93c5fd", edgecolor="#1e3a8a")
    for i, m in enumerate(names):
        ax_err.scatter([i] * len(modules[m]["errors"]), modules[m]["errors"], color="#1e3a8a", s=12, zorder=3)
    ax_err.set_xticks(range(len(names)), names, rotation=30)
    ax_err.set_ylabel("test error %")
    low = min(min(modules[m]["errors"]) for m in names)
    ax_err.set_ylim(max(0.0, low - 3), None)
    ax_err.set_title("Test error: mean ± std over seeds (dots: seeds)")
    for m in names:
        curve = modules[m]["test_acc_curve"]
        ax_curve.plot(range(1, len(curve) + 1), [100 * v for v in curve], marker="o", ms=3, label=m)
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("test accuracy %")
    ax_curve.set_title("Test accuracy over training (mean over seeds)")
    ax_curve.legend(fontsize=8, ncol=2)
    name = save_figure(figure, study.directory / "modules_errors.png")
    return {"file": name, "title": "Test error per module and accuracy over training",
            "caption": "Left: bars = mean over seeds, error bars = sample std, dots = individual seeds."}
