"""The activations study's report: per data set and preprocessing the metrics A-D beside the FeLU
paper's tables, the dead-unit curves, the plots and the reading, from the study's finished runs."""

from __future__ import annotations

import math
import os

import numpy as np

from attnviz.experiments.activations import (
    ACTIVATIONS,
    PREPROCESSINGS,
    QUESTION,
    ActivationsBudget,
    ArrayData,
    dead_at_init,
)
from attnviz.experiments.base import (
    Series,
    StudyRun,
    Table,
    new_figure,
    paper_table,
    save_figure,
    training_unit_times,
)
from attnviz.experiments.metrics import felu_metrics, mean_std
from attnviz.experiments.readings import activations_reading

METRIC_COLUMNS = ["activation", "A", "B", "C", "D", "t* (B)", "B (peak of mean curve)", "final val acc (mean ± std)",
                  "dead (pre-act <= 0), init -> end", "dead (gradient), init -> end"]


def write_report(study: StudyRun, plan: ActivationsBudget, datasets: dict, runs: dict):
    """Write the study's report.json, report.md and plots; returns report.json's path."""
    summary = _summaries(plan, datasets, runs)
    tables, series, plots = [], [], []
    for dataset_name, by_pre in summary.items():
        for preprocessing in PREPROCESSINGS:
            tables.append(_metrics_table(dataset_name, datasets[dataset_name], preprocessing,
                                         by_pre.get(preprocessing, {}), plan))
        series += _dead_unit_series(dataset_name, by_pre, plan)
        plots.append(_plot_dataset(study, dataset_name, by_pre, plan))
    reading = activations_reading(summary, plan.activations)
    results = {"summary": summary, "datasets": {k: {"source": d.source, "n_train": int(d.train_y.numel()),
                                                     "n_val": int(d.val_y.numel())} for k, d in datasets.items()}}
    unit_times = training_unit_times(runs)
    return study.write(question=QUESTION, budget_detail=plan.describe(), seeds=list(range(plan.runs)),
                       device=f"CPU, 1 thread ({os.cpu_count()} logical cores visible)", tables=tables, series=series, plots=plots,
                       results=results, reading=reading, unit_times=unit_times)


def _summaries(plan, datasets, runs) -> dict:
    """``summary[dataset][preprocessing][activation]``: metrics A-D (%), final accuracies, dead-unit curves from
    initialisation on, over the runs of each cell (what the tables, curves and reading show)."""
    out: dict = {}
    for (dataset_name, preprocessing, activation), results in runs.items():
        metrics = felu_metrics([r["train_acc"] for r in results], [r["val_acc"] for r in results])
        dead_relu = np.array([r["dead_relu"] for r in results])
        dead_grad = np.array([r["dead_gradient"] for r in results])
        final_mean, final_std = mean_std([r["val_acc"][-1] for r in results])
        # epoch 0 = before training (recomputed here: the run's seeded initial weights, no training needed)
        init = np.array([dead_at_init(datasets[dataset_name], preprocessing, activation, seed)
                         for seed in range(len(results))])
        dead_relu = np.concatenate([init[:, :1], dead_relu], axis=1)
        dead_grad = np.concatenate([init[:, 1:], dead_grad], axis=1)
        percent = {"A", "B", "C", "D", "B_peak_of_mean"}
        out.setdefault(dataset_name, {}).setdefault(preprocessing, {})[activation] = {
            **{k: (v * 100 if k in percent else v) for k, v in metrics.items()},
            "dead_relu_init": float(dead_relu[:, 0].mean()), "dead_gradient_init": float(dead_grad[:, 0].mean()),
            "final_val_acc_mean": final_mean * 100, "final_val_acc_std": final_std * 100,
            "final_val_accs": [round(r["val_acc"][-1] * 100, 4) for r in results],
            "dead_relu_curve": dead_relu.mean(axis=0).round(6).tolist(),
            "dead_gradient_curve": dead_grad.mean(axis=0).round(6).tolist(),
            "dead_relu_final": float(dead_relu[:, -1].mean()),
            "dead_gradient_final": float(dead_grad[:, -1].mean()),
            "dead_gradient_max": float(dead_grad.mean(axis=0).max()),
            "val_acc_curve": np.mean([r["val_acc"] for r in results], axis=0).round(6).tolist(),
            "hidden_units": results[0]["hidden_units"],
            "runs": len(results),
        }
    return out


def _metrics_table(dataset_name: str, data: ArrayData, preprocessing: str, cells: dict,
                   plan: ActivationsBudget) -> Table:
    """Metrics A-D and the dead units of every activation, beside the FeLU paper's table for MNIST."""
    from attnviz.paper_tables import FELU_TABLE1_NORMALISED, FELU_TABLE2_STANDARDISED

    paper_by_pre = {"normalised": (FELU_TABLE1_NORMALISED, "FeLU paper table 1 (MNIST, normalised)"),
                    "standardised": (FELU_TABLE2_STANDARDISED, "FeLU paper table 2 (MNIST, standardised)")}
    rows = []
    for activation in plan.activations:
        s = cells.get(activation)
        if s is None:
            continue
        rows.append([activation, round(s["A"], 2), round(s["B"], 2), round(s["C"], 2), round(s["D"], 2),
                     s["t_star"] + 1, round(s["B_peak_of_mean"], 2),
                     f"{s['final_val_acc_mean']:.2f} ± {s['final_val_acc_std']:.2f}",
                     f"{s['dead_relu_init']:.2f} -> {s['dead_relu_final']:.2f}",
                     f"{s['dead_gradient_init']:.2f} -> {s['dead_gradient_final']:.2f}"])
    paper_values, paper_source = paper_by_pre[preprocessing]
    paper = paper_table(f"MNIST, {preprocessing} inputs: A-D (%)", ["activation", "A", "B", "C", "D"],
                        [[a, *paper_values[a]] for a in plan.activations if a in paper_values], paper_source)
    return Table(
        id=f"{dataset_name}-{preprocessing}",
        title=f"{dataset_name}, {preprocessing} inputs: metrics A-D (validation accuracy %)",
        columns=METRIC_COLUMNS, rows=rows, paper=paper,
        caption=(f"{data.source}; {int(data.train_y.numel())} training / {int(data.val_y.numel())} "
                 f"validation images; {plan.runs} runs x {plan.epochs[dataset_name]} epochs. A = mean over "
                 "runs of the last epoch's validation accuracy; B = mean validation accuracy at the epoch "
                 "t* (1-based) where the run-mean training accuracy peaks; C = best run's last-epoch "
                 "validation accuracy; D = best validation accuracy of any run at any epoch. Dead units: "
                 "fraction of the SE hidden units dead on the probe batch before training and at the last "
                 "epoch (mean over runs); pre-act <= 0: for every probe image; gradient: the activation's "
                 "derivative below 1e-3 for every probe image."),
    )


def _dead_unit_series(dataset_name: str, by_pre: dict, plan: ActivationsBudget) -> list[Series]:
    """Two curve sets per data set: gradient-dead units, then units with pre-activation <= 0."""
    series = []
    for kind, label in (("dead_gradient", "gradient-dead"), ("dead_relu", "pre-activation <= 0")):
        lines = []
        for preprocessing in PREPROCESSINGS:
            for activation in plan.activations:
                s = by_pre.get(preprocessing, {}).get(activation)
                if s is not None:
                    curve = s[f"{kind}_curve"]
                    lines.append({"label": f"{activation} ({preprocessing})", "x": list(range(len(curve))),
                                  "y": curve})
        series.append(Series(id=f"{dataset_name}-{kind}", title=f"{dataset_name}: fraction of {label} "
                             "excitation units over training (mean over runs)", x_label="epoch (0 = at init)",
                             y_label="fraction of hidden units", lines=lines))
    return series


def _plot_dataset(study: StudyRun, dataset_name: str, by_pre: dict, plan: ActivationsBudget) -> dict:
    figure = new_figure(11, 6.5)
    axes = figure.subplots(2, 2)
    colours = {a: c for a, c in zip(ACTIVATIONS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#111111"),
                                    strict=True)}
    for col, preprocessing in enumerate(PREPROCESSINGS):
        cells = by_pre.get(preprocessing, {})
        for activation in plan.activations:
            s = cells.get(activation)
            if s is None:
                continue
            epochs = range(1, len(s["val_acc_curve"]) + 1)
            width = 2.2 if activation == "felu" else 1.2
            axes[0][col].plot(epochs, [v * 100 for v in s["val_acc_curve"]], color=colours[activation],
                              lw=width, label=activation)
            axes[1][col].plot(range(len(s["dead_gradient_curve"])), s["dead_gradient_curve"], color=colours[activation],
                              lw=width, label=activation)
        axes[0][col].set_title(f"{preprocessing}: validation accuracy (mean of runs)")
        axes[0][col].set_ylabel("%")
        axes[1][col].set_title(f"{preprocessing}: gradient-dead excitation units")
        axes[1][col].set_ylabel("fraction")
        axes[1][col].set_ylim(-0.03, 1.03)
        axes[1][col].set_xlabel("epoch (0 = at initialisation)")
        lows = [min(s["val_acc_curve"][len(s["val_acc_curve"]) // 2:]) for s in cells.values()] if cells else [0]
        axes[0][col].set_ylim(max(0.0, math.floor(min(lows) * 100) - 2), None)
    axes[0][0].legend(fontsize=8, ncol=2)
    figure.suptitle(f"{dataset_name}: SE excitation activation comparison ({plan.runs} runs each)")
    name = save_figure(figure, study.directory / f"{dataset_name}_curves.png")
    return {"file": name, "title": f"{dataset_name}: validation accuracy and dead excitation units",
            "caption": "Top: validation accuracy averaged over runs, per epoch. Bottom: fraction of the SE "
                       "hidden units whose activation derivative is below 1e-3 for every probe image."}
