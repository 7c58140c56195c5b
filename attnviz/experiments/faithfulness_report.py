"""The faithfulness study's report: its tables, plot and reading (the numbers come from
:func:`attnviz.experiments.faithfulness.summarise`)."""

from __future__ import annotations

import numpy as np

from attnviz.experiments.base import StudyRun, Table, device_label, new_figure, save_figure
from attnviz.experiments.faithfulness import (
    CONTROLS,
    FULL_METHODS,
    MASK,
    QUESTION,
    FaithfulnessBudget,
    summarise,
)
from attnviz.experiments.readings import faithfulness_reading

KIND_ORDER = list(FULL_METHODS) + [MASK] + list(CONTROLS)  # the order of the maps in every table and the plot


def write_report(study: StudyRun, plan: FaithfulnessBudget, data_label: str, results: dict, device):
    """Write the study's report.json, report.md and plot; returns report.json's path."""
    summary = summarise(results)
    tables = [_per_model_table(summary, plan, data_label), _overview_table(summary), _accuracy_table(summary)]
    plots = [_plot(study, summary)] if summary else []
    reading = faithfulness_reading(summary)
    unit_times = [r.get("unit_time_s", 0.0) for m in results.values() for r in m["kinds"].values()]
    return study.write(question=QUESTION, budget_detail=plan.describe(data_label), seeds=[0],
                       device=device_label(device), tables=tables, series=[], plots=plots, results=summary,
                       reading=reading, unit_times=unit_times)


def _verdict(row: dict, reference: str, metric: str) -> str:
    comparison = row.get(f"{metric}_vs_{reference}")
    if not comparison:
        return ""
    if not comparison["separated"]:
        return "≈"
    return "better" if comparison["better"] else "worse"


def _per_model_table(summary: dict, plan: FaithfulnessBudget, data_label: str) -> Table:
    rows = []
    for name, model_summary in summary.items():
        for kind in KIND_ORDER:
            row = model_summary["kinds"].get(kind)
            if row is None:
                continue
            rows.append([name, kind, round(row["deletion"], 4), round(row["insertion"], 4),
                         _verdict(row, "gradcam", "deletion"), _verdict(row, "gradcam", "insertion"),
                         _verdict(row, "random", "deletion"), _verdict(row, "random", "insertion"),
                         round(100 * row["pointing"], 1) if row["pointing"] is not None else None])
    return Table(
        id="per-model", title="Deletion / insertion AUC and pointing game, per model and map",
        columns=["model", "map", "deletion AUC (lower = better)", "insertion AUC (higher = better)",
                 "del. vs Grad-CAM", "ins. vs Grad-CAM", "del. vs random", "ins. vs random", "pointing game %"],
        rows=rows,
        caption=(f"{data_label}; {plan.steps} steps per curve; target = the predicted class (pointing game: the "
                 "true class). 'better'/'worse': the paired per-image difference exceeds 2 standard errors; '≈': "
                 "it does not. Pointing game chance = 25% (one of 4 quadrants)."),
        paper={"title": "LGAM fig. 5 shows Grad-CAM maps of ResNet-18 with and without LGAM and judges them by eye; "
                        "it reports no faithfulness numbers.", "columns": ["paper", "evidence"],
               "rows": [["LGAM fig. 5", "qualitative Grad-CAM heat maps (no metric)"]], "source": "LGAM fig. 5"},
    )


def _overview_table(summary: dict) -> Table:
    """One row per map: means over models, and how many models it beats Grad-CAM / random for."""
    rows = []
    for kind in KIND_ORDER:
        present = [m["kinds"][kind] for m in summary.values() if kind in m["kinds"]]
        if not present:
            continue
        beats_gradcam_ins = sum(1 for r in present if r.get("insertion_vs_gradcam", {}).get("separated")
                                and r["insertion_vs_gradcam"]["better"])
        beats_random_del = sum(1 for r in present if r.get("deletion_vs_random", {}).get("separated")
                               and r["deletion_vs_random"]["better"])
        rows.append([kind, len(present), round(float(np.mean([r["deletion"] for r in present])), 4),
                     round(float(np.mean([r["insertion"] for r in present])), 4),
                     round(100 * float(np.mean([r["pointing"] for r in present])), 1),
                     beats_gradcam_ins if kind != "gradcam" else None,
                     beats_random_del if kind != "random" else None])
    return Table(
        id="overview", title="Overview across models",
        columns=["map", "models", "mean deletion AUC", "mean insertion AUC", "mean pointing %",
                 "models where insertion beats Grad-CAM", "models where deletion beats random"],
        rows=rows, caption="Means over models of the per-model means; counts use the 2-standard-error rule.",
    )


def _accuracy_table(summary: dict) -> Table:
    rows = [[name, s["spec"], round(100 * s["accuracy"], 1), round(100 * s["mosaic_target_first"], 1)]
            for name, s in summary.items()]
    return Table(id="accuracy", title="Model accuracy on the evaluated images",
                 columns=["model", "spec", "accuracy % (test subset)",
                          "mosaics: target ranked first of the 4 classes present %"],
                 rows=rows,
                 caption="The 2 x 2 mosaics (64 x 64) are out of distribution for models trained on 32 x 32 "
                         "images; the last column (chance 25%) says how often the model still prefers the "
                         "target among the four classes shown.")


def _plot(study: StudyRun, summary: dict) -> dict:
    names = list(summary)
    figure = new_figure(12, 4.2)
    ax_del, ax_ins, ax_point = figure.subplots(1, 3)
    kinds = [k for k in KIND_ORDER if any(k in summary[n]["kinds"] for n in names)]
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        xs = [i + j * width for i, n in enumerate(names) if kind in summary[n]["kinds"]]
        rows = [summary[n]["kinds"][kind] for n in names if kind in summary[n]["kinds"]]
        if not rows:
            continue
        style = {"color": f"C{j}", "label": kind}
        ax_del.bar(xs, [r["deletion"] for r in rows], width, yerr=[2 * (r["deletion_se"] or 0) for r in rows], **style)
        ax_ins.bar(xs, [r["insertion"] for r in rows], width, yerr=[2 * (r["insertion_se"] or 0) for r in rows],
                   **style)
        ax_point.bar(xs, [100 * r["pointing"] for r in rows], width, **style)
    for ax, title in ((ax_del, "deletion AUC (lower = better)"), (ax_ins, "insertion AUC (higher = better)"),
                      (ax_point, "pointing game % (chance 25)")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title)
    ax_point.axhline(25, color="#888", lw=0.8, ls="--")
    ax_ins.legend(fontsize=7)
    name = save_figure(figure, study.directory / "faithfulness.png")
    return {"file": name, "title": "Faithfulness per model and map",
            "caption": "Error bars: ± 2 standard errors over images. Dashed line: pointing-game chance."}
