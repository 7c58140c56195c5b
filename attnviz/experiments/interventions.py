"""Study 6: which attention sites does a network rely on? (the SE paper's "role of excitation", measured)

Hu et al. (SENet) look at the excitations of each block and argue that the last stage's are nearly
class-agnostic and matter less; they support it by removing the last stage's SE blocks and retraining.
Here nothing is retrained: for every CIFAR-10 checkpoint of the zoo with overridable attention
(:mod:`attnviz.analysis.interventions`: SE, SE-FeLU, ECA, CBAM, BAM, SGE, LGAM's spatial mask) each site's
attention is, on its own,

- replaced by its **dataset mean** (channel weights by their mean vector [C], spatial masks by their
  mean map, BAM's joint gate by its mean [C, H, W], all computed on training images), which keeps the
  average recalibration but removes what depends on the picture; and
- switched **off** (weights / masks := 1), the SE paper's removal without retraining;

and the test accuracy is measured again. The drop is paired over the same test images (mean ± standard
error, in points); "separated" = more than 2 standard errors. Rows "every site" do all sites at once.
Interflow heads get the analogous question per branch (weight := 0, or that branch alone). Every unit
records the checkpoint's weights sha256.

Data: ``load_cifar`` (``$ATTNVIZ_EXPERIMENT_CIFAR10`` if set, else the shipped sample at tiny/small):
the first k test images of each class for the accuracy and the first m training images of each class
for the means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attnviz.experiments.base import (
    Progress,
    StudyRun,
    Table,
    device_label,
    new_figure,
    open_study,
    paper_table,
    save_figure,
)

STUDY = "interventions"
TITLE = "Interventions: which attention sites does the network rely on?"
QUESTION = (
    "When one site's attention is replaced by its dataset mean (or switched off), how much test accuracy is lost? "
    "The SE paper reads the excitations of the last stage as nearly class-agnostic and less important; here every "
    "site of every zoo model is measured, without retraining."
)
REQUIRED = ("resnet20-se", "resnet20-se-felu")
BATCH = 500


@dataclass(frozen=True)
class InterventionsBudget:
    test_per_class: int | None
    mean_per_class: int
    max_models: int | None

    def describe(self, data: str) -> dict:
        return {"data": data,
                "test images": "all" if self.test_per_class is None else self.test_per_class * 10,
                "training images for the means": self.mean_per_class * 10,
                "interventions": "per site: dataset mean, attention off; every site at once; Interflow: each branch off / alone",
                "models": "all CIFAR-10 checkpoints with overridable attention" if self.max_models is None
                else f"first {self.max_models}"}


BUDGETS = {
    "tiny": InterventionsBudget(test_per_class=3, mean_per_class=3, max_models=1),
    "small": InterventionsBudget(test_per_class=100, mean_per_class=100, max_models=None),
    "full": InterventionsBudget(test_per_class=None, mean_per_class=1000, max_models=None),
}


def _site_interventions(sites: dict, means: dict, how: str) -> dict[str, list]:
    """site -> the interventions that replace all of its overridable readouts (``how`` = mean | ones)."""
    from attnviz.analysis.interventions import Intervention

    out = {}
    for site, info in sites.items():
        items = []
        if "channel_ones" in info["methods"]:
            items.append(Intervention(site, "channel_ones") if how == "ones"
                         else Intervention(site, "channel_mean", value=means[site]["channel"]))
        if "spatial_ones" in info["methods"]:
            items.append(Intervention(site, "spatial_ones") if how == "ones"
                         else Intervention(site, "spatial_mean", value=means[site]["spatial"]))
        if items:
            out[site] = items
    return out


def _row(stats: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) and not math.isnan(v) else v) for k, v in stats.items()}


def evaluate_model(model, card: dict, dataset, plan: InterventionsBudget) -> dict:
    from attnviz.analysis.interventions import (
        Intervention,
        accuracy_with,
        intervention_sites,
        predict,
        readout_means,
    )
    from attnviz.data import preprocess

    test = dataset.subset(train_per_class=plan.mean_per_class, test_per_class=plan.test_per_class)
    x = preprocess(test.test_images, card["mean"], card["std"])
    labels = test.test_labels
    train_x = preprocess(test.train_images, card["mean"], card["std"])
    sites = intervention_sites(model)
    reference = predict(model, x, batch_size=BATCH)
    out = {"accuracy": float((reference == labels).double().mean()), "n_test": int(labels.numel()),
           "n_means": int(train_x.shape[0]), "sites": {}, "all": {}, "branches": {}}
    attention = {s: i for s, i in sites.items() if i["kind"] != "interflow"}
    if attention:
        means = readout_means(model, [train_x[i:i + BATCH] for i in range(0, train_x.shape[0], BATCH)])
        for how in ("mean", "ones"):
            per_site = _site_interventions(attention, means, how)
            for site, items in per_site.items():
                stats = accuracy_with(model, x, labels, items, reference=reference)
                out["sites"].setdefault(site, {"kind": attention[site]["kind"],
                                               "parts": [iv.method.split("_")[0] for iv in items]})[how] = _row(stats)
            everything = [iv for items in per_site.values() for iv in items]
            out["all"][how] = _row(accuracy_with(model, x, labels, everything, reference=reference))
    for site, info in sites.items():
        if info["kind"] != "interflow":
            continue
        for b in range(int(info["branches"])):
            for method in ("branch_off", "branch_only"):
                stats = accuracy_with(model, x, labels, [Intervention(site, method, branch=b)], reference=reference)
                out["branches"].setdefault(str(b), {})[method] = _row(stats)
    return out


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None, *, checkpoint_dirs=None):
    from attnviz.analysis.interventions import intervention_sites
    from attnviz.checkpoints import load_checkpoint
    from attnviz.experiments.faithfulness import usable_checkpoints

    plan, study, dataset, data_label = open_study(STUDY, TITLE, BUDGETS, budget, out_dir, progress)
    progress = study.progress
    source = data_label.rsplit(": ", 1)[0]  # "imagefolder:PATH" keeps its path
    from attnviz.experiments.sanity import _note_source

    _note_source(study, budget)
    tests = "every test image" if plan.test_per_class is None else f"the first {plan.test_per_class} test images of each class"
    data_label = f"{source}: {tests}; means over the first {plan.mean_per_class} training images of each class"
    device = torch.device("cpu")
    work = []
    for entry in usable_checkpoints(checkpoint_dirs, study.notes):
        model, card = load_checkpoint(entry["path"], device=device)
        if intervention_sites(model):
            work.append((entry, model, card))
    work.sort(key=lambda item: (item[0]["name"] not in REQUIRED, REQUIRED.index(item[0]["name"])
                                if item[0]["name"] in REQUIRED else 0))
    if plan.max_models is not None and len(work) > plan.max_models:
        study.notes.append(f"The {budget} budget evaluates only the first {plan.max_models} of {len(work)} checkpoints.")
        work = work[: plan.max_models]
    missing = [name for name in REQUIRED if name not in {e["name"] for e, _, _ in work}]
    if missing and plan.max_models is None:
        study.notes.append(f"Not found, so not measured: {', '.join(missing)}.")
    results, used = {}, []
    for done, (entry, model, card) in enumerate(work):
        progress(done, len(work), entry["name"])
        used.append({"name": entry["name"], "spec": card["spec"], "sha256": entry["sha256"],
                     "test_acc": card["metrics"].get("test_acc"), "dataset": card.get("dataset"),
                     "created": card.get("created")})
        config = {"checkpoint": entry["name"], "sha256": entry["sha256"], "data": data_label,
                  "test_per_class": plan.test_per_class, "mean_per_class": plan.mean_per_class}
        result = study.units.run(f"{entry['name']}-{entry['sha256'][:12]}", config,
                                 lambda m=model, c=card: evaluate_model(m, c, dataset, plan))
        results[entry["name"]] = {"spec": card["spec"], **result}
    progress(len(work), len(work), "writing the report")
    return _write_report(study, plan, data_label, results, used, device)


def _points(value):
    return None if value is None else round(100 * value, 2)


def _separated(stats: dict) -> bool:
    se = stats.get("drop_se")
    return bool(se is not None and not (isinstance(se, float) and math.isnan(se)) and abs(stats["drop"]) > 2 * se)


def summarise(results: dict) -> dict:
    """Per model: the site with the largest drop (mean replacement and off), per stage the mean drop."""
    out = {}
    for name, r in results.items():
        sites = r["sites"]
        entry = {"spec": r["spec"], "accuracy": r["accuracy"], "n_test": r["n_test"], "sites": {}}
        for how in ("mean", "ones"):
            ranked = sorted(((s, v[how]["drop"]) for s, v in sites.items() if how in v), key=lambda item: -item[1])
            entry[f"largest_{how}"] = ranked[0] if ranked else None
            by_stage: dict[str, list[float]] = {}
            for s, v in sites.items():
                if how in v:
                    by_stage.setdefault(s.split(".")[0], []).append(v[how]["drop"])
            entry[f"stage_{how}"] = {k: float(np.mean(v)) for k, v in by_stage.items()}
            entry[f"separated_{how}"] = [s for s, v in sites.items() if how in v and _separated(v[how])]
            entry[f"all_{how}"] = r["all"].get(how)
        entry["branches"] = r.get("branches", {})
        out[name] = entry
    return out


def _write_report(study: StudyRun, plan: InterventionsBudget, data_label: str, results: dict, used: list[dict], device):
    from attnviz.experiments.readings import interventions_reading

    summary = summarise(results)
    summary_out = {"models": summary, "checkpoints": used}
    tables = [_per_site_table(results, data_label), _per_stage_table(summary)]
    branches = _branch_table(results)
    if branches is not None:
        tables.append(branches)
    tables.append(_checkpoints_table(used))
    plots = [_plot(study, results)] if any(r["sites"] for r in results.values()) else []
    reading = interventions_reading(summary_out, data_label=data_label)
    unit_times = [r.get("unit_time_s", 0.0) for r in results.values()]
    return study.write(question=QUESTION, budget_detail=plan.describe(data_label), seeds=[0],
                       device=device_label(device), tables=tables, series=[], plots=plots, results=summary_out,
                       reading=reading, unit_times=unit_times)


def _site_rows(results: dict) -> list[list]:
    """Per model: one row per site, then one for every site at once (dataset mean; attention off beside)."""
    rows = []
    for name, r in results.items():
        for site, v in r["sites"].items():
            mean, ones = v.get("mean", {}), v.get("ones", {})
            rows.append([name, site, v["kind"], "+".join(v["parts"]), _points(r["accuracy"]),
                         _points(mean.get("drop")), _points(2 * mean["drop_se"]) if mean.get("drop_se") is not None else None,
                         "yes" if mean and _separated(mean) else "no", _points(mean.get("changed")),
                         _points(ones.get("drop")), "yes" if ones and _separated(ones) else "no"])
        a, o = r["all"].get("mean"), r["all"].get("ones")
        if a:
            rows.append([name, "every site", "", "", _points(r["accuracy"]), _points(a["drop"]),
                         _points(2 * a["drop_se"]), "yes" if _separated(a) else "no", _points(a["changed"]),
                         _points(o["drop"]) if o else None, "yes" if o and _separated(o) else "no"])
    return rows


def _per_site_table(results: dict, data_label: str) -> Table:
    return Table(
        id="per-site", title="Accuracy drop when one site's attention is replaced by its dataset mean",
        columns=["model", "site", "kind", "readouts replaced", "accuracy %", "drop, mean (points)", "± 2 SE",
                 "separated", "predictions changed %", "drop, attention off (points)", "off: separated"],
        rows=_site_rows(results),
        caption=(f"{data_label}. Drop = accuracy without the intervention minus with it, paired over the same test "
                 "images (positive = the site's picture-dependent attention was needed). 'Attention off' sets the "
                 "weights / masks to 1: the identity for SE, ECA, CBAM and SGE (the SE paper's removal, but without "
                 "retraining); for BAM (F + F·M) and LGAM (A'·M + A) a mask of ones makes every position alike while "
                 "the attention branch stays at full strength."),
        paper=paper_table(
            "Hu et al. (Squeeze-and-Excitation Networks, TPAMI 2019 version), ImageNet, SE-ResNet-50; their analysis "
            "is qualitative and retrains the network without the removed blocks.",
            ["where", "what the paper says"],
            [["sec. 7.2 (role of excitation)", "early blocks' excitations are class-agnostic, later ones class-specific; "
              "the last stage's (SE_5_2, SE_5_3) are nearly saturated / alike across classes, so they matter less for "
              "recalibration"],
             ["sec. 4 (complexity)", "removing the SE blocks of the final stage costs only a marginal loss "
              "(<0.1% top-5 error on ImageNet) while saving most of the added parameters"]],
            "Hu, Shen, Albanie, Sun & Wu, IEEE TPAMI 2019 (arXiv 1709.01507), secs. 4 and 7.2 (quoted from the paper; not in ../shared/papers)"),
    )


def _per_stage_table(summary: dict) -> Table:
    rows = []
    for name, s in summary.items():
        for stage in sorted(set(s["stage_mean"]) | set(s["stage_ones"])):
            rows.append([name, stage, _points(s["stage_mean"].get(stage)), _points(s["stage_ones"].get(stage))])
    return Table(id="per-stage", title="Mean drop per stage (points)",
                 columns=["model", "stage", "mean over the stage's sites: dataset mean",
                          "mean over the stage's sites: attention off"], rows=rows,
                 caption="The SE paper's question in one number per stage: is the last stage's attention the least needed?")


def _branch_table(results: dict) -> Table | None:
    """Interflow's branches one by one (off, or alone); None when no model has an Interflow head."""
    rows = []
    for name, r in results.items():
        for b, v in r.get("branches", {}).items():
            rows.append([name, int(b) + 1, _points(r["accuracy"]), _points(v["branch_off"]["drop"]),
                         "yes" if _separated(v["branch_off"]) else "no",
                         _points(v["branch_only"]["accuracy"])])
    if not rows:
        return None
    return Table(id="interflow-branches", title="Interflow: each branch switched off, or alone",
                 columns=["model", "branch", "accuracy %", "drop, branch weight := 0 (points)", "separated",
                          "accuracy with that branch alone %"], rows=rows,
                 caption="Branch b alone: the aggregation weights are one-hot at b, so the output is that "
                         "stage branch's own logits.")


def _checkpoints_table(used: list[dict]) -> Table:
    return Table(
        id="checkpoints", title="Checkpoints measured",
        columns=["name", "spec", "weights sha256", "test acc. (card)", "trained on", "created"],
        rows=[[u["name"], u["spec"], u["sha256"], u["test_acc"], u["dataset"], u["created"]] for u in used],
        caption="Rerunning with other weights (a retrained zoo) recomputes every unit: their configs hold these hashes.",
    )


def _plot(study: StudyRun, results: dict) -> dict:
    names = [n for n, r in results.items() if r["sites"]]
    figure = new_figure(max(6.0, 2.6 * len(names)), 3.2)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        sites = results[name]["sites"]
        labels = [s.replace(".attn", "") for s in sites]
        for offset, (how, color) in enumerate((("mean", "#1d4ed8"), ("ones", "#c2410c"))):
            values = [100 * sites[s][how]["drop"] if how in sites[s] else np.nan for s in sites]
            errors = [200 * sites[s][how]["drop_se"] if how in sites[s] else 0 for s in sites]
            ax.bar(np.arange(len(labels)) + 0.4 * offset, values, 0.4, yerr=errors, color=color,
                   label="dataset mean" if how == "mean" else "attention off")
        ax.set_xticks(np.arange(len(labels)) + 0.2, labels, rotation=70, fontsize=6)
        ax.axhline(0, color="#666", lw=0.6)
        ax.set_title(name, fontsize=8)
    axes[0].set_ylabel("accuracy drop (points)")
    axes[0].legend(fontsize=6)
    name = save_figure(figure, study.directory / "interventions.png")
    return {"file": name, "title": "Accuracy drop per site",
            "caption": "Error bars: ± 2 standard errors of the paired drop over test images."}
