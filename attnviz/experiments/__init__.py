"""The papers' comparisons, re-run with error bars: a registry of studies.

Each study is a module with ``run(budget, out_dir, progress) -> Path`` (the report.json it wrote):

- ``activations``: the FeLU paper's activation comparison (tables 1-2, metrics A-D) and dead units.
- ``modules``: ResNet-20 with every attention module, several seeds (LGAM table 3, FeLU tables 3-4).
- ``interflow``: Interflow's hard / soft / per-class aggregation on ResNet-20 and VGG-16 (claims 3-5).
- ``faithfulness``: deletion/insertion AUC of CAMs, attributions and the modules' own masks for the
  zoo, and a pointing game on a synthetic set with known object locations.
- ``sanity``: Adebayo et al.'s model- and data-randomisation tests for the explanations and the
  modules' readouts (:mod:`attnviz.analysis.sanity`).
- ``interventions``: the accuracy drop when each site's attention is replaced by its dataset mean or
  switched off (:mod:`attnviz.analysis.interventions`; the SE paper's "role of excitation").

Budgets: ``tiny`` (tests: seconds, on the shipped sample set), ``small`` (the shipped reports: all
four together within about 90 minutes on 2 CPU cores), ``full`` (GPU-sized). Reports go to
``out_dir/<study>/`` (``report.json``, ``report.md``, PNG plots); see :mod:`attnviz.experiments.base`
for resuming and metadata. :func:`list_reports` finds written reports for the app.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from attnviz.experiments.base import BUDGETS, ExperimentError, Progress, check_budget


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    summary: str
    budgets: dict  # budget -> one-line description

    def run(self, budget: str = "small", out_dir: str | Path = "reports", progress: Progress | None = None) -> Path:
        check_budget(budget)
        module = importlib.import_module(f"attnviz.experiments.{self.name}")
        return Path(module.run(budget, out_dir, progress))


STUDIES: dict[str, Study] = {
    "activations": Study(
        "activations", "Activations in the SE excitation",
        "FeLU paper §3.1-3.2 (tables 1-2): 6 excitation activations x normalised/standardised inputs x 5 runs, "
        "metrics A-D, dead excitation units over training.",
        {"tiny": "digits + CIFAR-10 sample subsets, ReLU and FeLU only, 2 runs, 2 epochs (seconds)",
         "small": "MNIST (if downloadable), 8x8 digits (100 epochs), CIFAR-10 sample subset (1,000/500, 10 epochs); "
                  "5 runs; 29 min measured on a 2-core CPU (one thread)",
         "full": "MNIST and CIFAR-10 in full, 100 epochs, 5 runs"},
    ),
    "modules": Study(
        "modules", "Attention modules compared on ResNet-20",
        "none, SE, SE-FeLU, LGAM, CBAM, BAM, SGE, ECA (+ two LGAM ablations) on ResNet-20, >= 3 seeds each, one recipe: test error "
        "mean ± std, params, FLOPs, train/inference time per epoch, which differences exceed the seed spread.",
        {"tiny": "sample subset, 1 epoch, 3 seeds, 3 modules (seconds)",
         "small": "shipped CIFAR-10 sample (2,000/500 images), 10 epochs, 3 seeds, 10 variants (18 min measured on 2 idle CPU cores)",
         "full": "full CIFAR-10, 30 epochs, 5 seeds (GPU)"},
    ),
    "interflow": Study(
        "interflow", "Interflow's aggregation",
        "hard (equal, deep-weighted) vs soft vs per_class Interflow on ResNet-20 and narrow VGG-16: accuracy, "
        "each branch's own accuracy, learned branch weights at the end and over training (claims 3-5).",
        {"tiny": "sample subset, 2 epochs, ResNet-20 only (seconds)",
         "small": "shipped CIFAR-10 sample, 10 epochs, 3 seeds (9 min measured on 2 idle CPU cores)",
         "full": "full CIFAR-10, 30 epochs, 3 seeds (GPU)"},
    ),
    "faithfulness": Study(
        "faithfulness", "Which explanations are faithful?",
        "Deletion/insertion AUC of Grad-CAM, Grad-CAM++ and Saliency (+ Integrated Gradients at full), the modules' "
        "own spatial masks "
        "and two controls for every zoo checkpoint on 500 CIFAR-10 test images; grid pointing game on 2x2 mosaics.",
        {"tiny": "20 images, 1 checkpoint (seconds)",
         "small": "the sample's 500 test images, 100 mosaics, 8 steps, every CIFAR-10 checkpoint "
                  "(4.4 min measured for the 11 zoo checkpoints on 2 CPU cores)",
         "full": "1,000 test images, 1,000 mosaics, 32 steps per curve"},
    ),
    "sanity": Study(
        "sanity", "Sanity checks for the explanations",
        "Adebayo et al. 2018: cascading and independent re-initialisation of every zoo checkpoint (Grad-CAM, Grad-CAM++, "
        "Saliency, Guided Backprop, Integrated Gradients, and the modules' readouts), plus a true- vs shuffled-label pair.",
        {"tiny": "10 test pictures, 1 checkpoint, Grad-CAM and Saliency (seconds)",
         "small": "10 test pictures (one per class), every CIFAR-10 checkpoint, 5 methods (Integrated Gradients in the "
                  "cascading test only), stage by stage; a ResNet-20 pair trained 30 epochs on 500 sample images with "
                  "true / shuffled labels",
         "full": "100 test pictures, block by block, 8 methods, the label pair on 2,000 images for 60 epochs"},
    ),
    "interventions": Study(
        "interventions", "Interventions on the attention",
        "Test-accuracy drop when each site's attention is replaced by its dataset mean or switched off (every zoo model "
        "with SE, SE-FeLU, ECA, CBAM, BAM, SGE or LGAM), every site at once, and Interflow's branches one by one.",
        {"tiny": "30 test images, 1 checkpoint (seconds)",
         "small": "1,000 test images (the sample's 500 without $ATTNVIZ_EXPERIMENT_CIFAR10), means over 1,000 training images",
         "full": "the whole test split, means over 10,000 training images"},
    ),
}


def list_studies() -> list[Study]:
    return list(STUDIES.values())


def get_study(name: str) -> Study:
    study = STUDIES.get(name)
    if study is None:
        raise ExperimentError(f"Unknown study '{name}'; known: {', '.join(STUDIES)}.")
    return study


def run_study(name: str, budget: str = "small", out_dir: str | Path = "reports",
              progress: Progress | None = None) -> Path:
    """Run study ``name`` at ``budget``; returns the path of the report.json it wrote."""
    return get_study(name).run(budget, out_dir, progress)


def reports_dirs() -> list[Path]:
    """Where reports are looked for: ``$ATTNVIZ_REPORTS`` (os.pathsep-separated), then the repo's ``reports/``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("ATTNVIZ_REPORTS", "").split(os.pathsep) if p.strip()]
    dirs.append(Path(__file__).resolve().parents[2] / "reports")
    return dirs


def list_reports(dirs: list[str | Path] | None = None) -> list[dict]:
    """Every readable ``<dir>/<study>/report.json``, parsed, with ``_dir`` (its folder) added.

    Files that are not valid reports are skipped; order: the registry's order of studies, then folder.
    """
    found = []
    for directory in [Path(d) for d in dirs] if dirs is not None else reports_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*/report.json")):
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(report, dict) or not {"study", "tables", "metadata"} <= report.keys():
                continue
            report["_dir"] = str(path.parent)
            found.append(report)
    order = {name: i for i, name in enumerate(STUDIES)}
    found.sort(key=lambda r: (order.get(r.get("study"), len(order)), r["_dir"]))
    return found


__all__ = ["BUDGETS", "STUDIES", "Study", "ExperimentError", "list_studies", "get_study", "run_study",
           "list_reports", "reports_dirs"]
