"""The sanity study's report: its tables, curves, plots and reading (the numbers come from
:func:`attnviz.experiments.sanity.summarise`)."""

from __future__ import annotations

import numpy as np

from attnviz.experiments.base import (
    Series,
    StudyRun,
    Table,
    device_label,
    new_figure,
    paper_table,
    save_figure,
)
from attnviz.experiments.readings import sanity_reading
from attnviz.experiments.sanity import QUESTION, SanityBudget, _decode_map, _round, summarise


def write_report(study: StudyRun, plan: SanityBudget, data_label: str, results: dict, data_random: dict | None,
                 used: list[dict], strip_model: str | None, device):
    """Write the study's report.json, report.md and plots; returns report.json's path."""
    summary = summarise(results)
    summary["data_randomisation"] = data_random
    summary["checkpoints"] = used
    tables = [_overview_table(summary, data_label), _per_model_table(summary), _readouts_table(results)]
    if data_random:
        tables.append(_data_randomisation_table(plan, data_random))
    tables.append(_checkpoints_table(used))
    series = _cascade_series(summary, results)
    plots = _plots(study, results, strip_model) if results else []
    reading = sanity_reading(summary)
    return study.write(question=QUESTION, budget_detail=plan.describe(data_label), seeds=[0],
                       device=device_label(device), tables=tables, series=series, plots=plots, results=summary,
                       reading=reading, unit_times=_unit_times(results, data_random))


def _unit_times(results: dict, data_random: dict | None) -> list[float]:
    times = [r[mode].get("unit_time_s", 0.0) for r in results.values() for mode in ("cascading", "independent")
             if mode in r]
    if data_random:
        times.append(data_random.get("unit_time_s", 0.0))
    return times


def _overview_table(summary: dict, data_label: str) -> Table:
    """Per method: how many models pass or fail the cascading test, beside the paper's findings."""
    from attnviz.analysis.sanity import FAIL_AT, PASS_BELOW

    rows = [[m, o["models"], o["passes"], o["partly"], o["fails"], _round(o["mean_after_head"]),
             _round(o["mean_final"]), _round(o["mean_final_ssim"])] for m, o in summary["methods"].items()]
    return Table(
        id="overview", title="Cascading randomisation: which methods pass",
        columns=["method", "models", "pass (changes)", "partly", "fail (barely changes)",
                 "mean rank corr. of abs(map), head random", "mean rank corr. of abs(map), all random",
                 "mean SSIM, all random"],
        rows=rows,
        caption=(f"{data_label}; the trained model's predicted class is explained at every step. Pass: mean Spearman "
                 f"rank correlation of |map| with the trained map below {PASS_BELOW:g} once every layer is "
                 f"re-initialised; fail: {FAIL_AT:g} or above (our thresholds)."),
        paper=paper_table(
            "Adebayo et al. judge the cascading test by eye and by the same rank correlations (Inception v3, ImageNet).",
            ["method", "their finding"],
            [["Gradient (our saliency)", "changes as layers are randomised: passes"],
             ["Grad-CAM", "changes: passes"],
             ["Guided Backprop", "stays nearly unchanged even with all layers random: fails"],
             ["Guided Grad-CAM", "stays nearly unchanged: fails (not run here)"]],
            "Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018, sec. 3 and fig. 2"),
    )


def _per_model_table(summary: dict) -> Table:
    rows = []
    for name, s in summary["models"].items():
        for m, row in s["methods"].items():
            sensitive = s["independent_most_sensitive"].get(m)
            rows.append([name, m, _round(row["after_head"]), _round(row["final"]), _round(row["final_spearman"]),
                         _round(row["final_ssim"]), row["verdict"],
                         f"{sensitive[0]} ({sensitive[1]:.2f})" if sensitive else None])
    return Table(
        id="per-model", title="Per model and method",
        columns=["model", "method", "rank corr. abs(map), head random", "rank corr. abs(map), all random",
                 "rank corr. map, all random", "SSIM, all random", "verdict",
                 "independent: stage that changes it most (rank corr.)"],
        rows=rows,
        caption="Cascading from the logits down; the last column re-initialises one stage at a time, the rest trained.",
    )


def _stage_of(site: str) -> str:
    return site.split(".")[0]


def _readout_mean(step: dict | None, members: list[str]) -> float | None:
    if step is None:
        return None
    values = [step["readouts"][k]["mean"] for k in members
              if step["readouts"].get(k) and step["readouts"][k]["mean"] is not None]
    return round(float(np.mean(values)), 3) if values else None


def _readout_rows(results: dict) -> list[list]:
    """Per model, readout part and stage: mean rank correlation after the head, after the site's own
    stage alone (independent) and with everything random."""
    rows = []
    for name, r in results.items():
        cascade, independent = r["cascading"], r.get("independent")
        groups: dict[tuple[str, str], list[str]] = {}
        for key in cascade["steps"][0]["readouts"]:
            site, part = key.rsplit(":", 1)
            groups.setdefault((part, _stage_of(site)), []).append(key)
        for (part, stage), members in groups.items():
            steps = cascade["steps"]
            own = next((s for s in independent["steps"] if s["label"] == stage), None) if independent else None
            rows.append([name, part, stage, len(members), _readout_mean(steps[1] if len(steps) > 1 else None, members),
                         _readout_mean(own, members), _readout_mean(steps[-1], members)])
    return rows


def _readouts_table(results: dict) -> Table:
    return Table(
        id="readouts", title="The attention modules' own readouts under randomisation",
        columns=["model", "readout", "stage", "sites", "rank corr., head random", "rank corr., own stage random alone",
                 "rank corr., all random"],
        rows=_readout_rows(results),
        caption=("Mean Spearman correlation (over sites of the stage and pictures) of each readout with the trained "
                 "model's: channel weights, spatial masks, Interflow branch weights. A readout before the head cannot "
                 "change when only the head is random (1.0 expected there; Interflow's branch weights live in the head). "
                 "'–': the readout is constant, so it has no ranking: re-initialised Interflow weights are all 1/n and "
                 "re-initialised SGE gates all sigmoid(1); a saturated mask (LGAM's last stage) is constant already "
                 "when trained."),
    )


def _data_randomisation_table(plan: SanityBudget, data_random: dict) -> Table:
    """The true-label model's maps against the shuffled-label model's, beside the paper's findings."""
    rows = [[m, _round(v["spearman_abs"]["mean"]), _round(v["spearman"]["mean"]), _round(v["ssim"]["mean"])]
            for m, v in data_random["methods"].items()]
    return Table(
        id="data-randomisation", title="Data randomisation: true labels vs shuffled labels",
        columns=["method", "rank corr. abs(map)", "rank corr. map", "SSIM"], rows=rows,
        caption=(f"Two {plan.data_randomisation['spec']} trained on the same {data_random['n_train']} sample images, "
                 f"true labels (train acc. {100 * (data_random['true']['train_acc'] or 0):.0f}%, test acc. "
                 f"{100 * data_random['true']['test_acc']:.1f}%) and shuffled labels (train acc. "
                 f"{100 * (data_random['shuffled']['train_acc'] or 0):.0f}%, test acc. "
                 f"{100 * data_random['shuffled']['test_acc']:.1f}%); maps for {data_random['n_images']} test "
                 "pictures and the true-label model's predicted classes. High similarity = the method does not "
                 "depend on what the labels taught."),
        paper=paper_table("Adebayo et al., data randomisation test (CNN on MNIST and Inception v3 on ImageNet).",
                          ["method", "their finding"],
                          [["Gradient, Grad-CAM", "maps differ between true- and random-label models: pass"],
                           ["Guided Backprop, Guided Grad-CAM", "maps stay similar: fail"]],
                          "Adebayo et al. 2018, sec. 4 and fig. 5"),
    )


def _checkpoints_table(used: list[dict]) -> Table:
    return Table(
        id="checkpoints", title="Checkpoints measured",
        columns=["name", "spec", "weights sha256", "test acc. (card)", "trained on", "created"],
        rows=[[u["name"], u["spec"], u["sha256"], u["test_acc"], u["dataset"], u["created"]] for u in used],
        caption="Rerunning with other weights (a retrained zoo) recomputes every unit: their configs hold these hashes.",
    )


def _cascade_series(summary: dict, results: dict) -> list[Series]:
    """Per model: every method's rank correlation of |map| at each step of the cascading test."""
    series = []
    for name, s in summary["models"].items():
        cascade = results[name]["cascading"]
        lines = [{"label": m, "x": s["labels"], "y": [step["methods"][m]["spearman_abs"]["mean"] for step in cascade["steps"]]}
                 for m in cascade["methods"]]
        series.append(Series(id=f"cascade-{name}", title=f"{name}: rank correlation of |map| from trained to random",
                             x_label="randomised down to", y_label="Spearman of |map| with the trained map", lines=lines))
    return series


def _plots(study: StudyRun, results: dict, strip_model: str | None) -> list[dict]:
    plots = []
    names = list(results)
    methods = results[names[0]]["cascading"]["methods"]
    figure = new_figure(3.2 * len(methods), 3.0)
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        for i, name in enumerate(names):
            steps = results[name]["cascading"]["steps"]
            values = [s["methods"][method]["spearman_abs"]["mean"] for s in steps]
            ax.plot(range(len(values)), [np.nan if v is None else v for v in values], marker="o", ms=3, lw=1,
                    color=f"C{i % 10}", label=name)
        ax.set_title(method, fontsize=9)
        ax.set_ylim(-0.2, 1.05)
        ax.set_xlabel("layers re-initialised (0 = trained)", fontsize=7)
        ax.axhline(0, color="#999", lw=0.6)
    axes[0].set_ylabel("rank corr. of |map| with trained")
    axes[-1].legend(fontsize=5, loc="upper right")
    plots.append({"file": save_figure(figure, study.directory / "cascading.png"),
                  "title": "Cascading randomisation, every model",
                  "caption": "Step 0 = trained; then head, last stage, ..., stem re-initialised cumulatively."})
    strip = results.get(strip_model, {}).get("cascading", {}).get("strip") if strip_model else None
    if strip:
        labels = [s["label"] for s in results[strip_model]["cascading"]["steps"]]
        figure = new_figure(1.25 * len(labels), 1.35 * len(strip))
        grid = figure.subplots(len(strip), len(labels), squeeze=False)
        for row, (method, maps) in enumerate(strip.items()):
            for col, heat in enumerate(maps):
                ax = grid[row][col]
                ax.imshow(_decode_map(heat), cmap="jet", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(labels[col], fontsize=7)
                if col == 0:
                    ax.set_ylabel(method, fontsize=6)
        plots.append({"file": save_figure(figure, study.directory / "strip.png"),
                      "title": f"{strip_model}: maps of the first picture from trained (left) to fully random",
                      "caption": "Each column re-initialises one more part, from the logits down."})
    return plots
