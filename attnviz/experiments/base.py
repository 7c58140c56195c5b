"""What every study shares: budgets, resumable units, metadata, and the report writer.

A study is a function ``run(budget, out_dir, progress)``. It splits its work into *units* (one
training run, one model x method evaluation), each identified by a key and described by a config
dict. :class:`UnitStore` saves a unit's result as JSON the moment it finishes (atomic write) under
``out_dir/<study>/units/<budget>/``; a rerun finds it and skips the unit, so an interrupted study
resumes where it stopped. A saved unit is reused only if its config equals the one asked for now (a
changed recipe or data set recomputes it). Mid-unit state that the trainer keeps for its own resume
(``*.trainstate``) lives in ``out_dir/<study>/.work/`` and is deleted once the unit's result is saved.

The report: ``report.json`` (for the app: tables, series, plots, the reading, metadata),
``report.md`` (the tables for people) and the PNG plots, all in ``out_dir/<study>/``. Every number in
them comes from the units of the run that wrote the report. Metadata records the git commit (and
whether the tree had uncommitted changes), device, seeds, budget, wall time of this invocation, the
compute time summed over the units (including units finished by an earlier, interrupted
invocation), and library versions.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.errors import AttnvizError
from attnviz.jsonutil import finite

BUDGETS = ("tiny", "small", "full")
REPORT_FORMAT = 1

Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``: called before each unit (label = what runs next) and at the end."""


class ExperimentError(AttnvizError):
    """A study cannot run as asked (unknown name or budget, missing data)."""


def check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise ExperimentError(f"Unknown budget '{budget}'; use one of {', '.join(BUDGETS)}.")
    return budget


def _no_progress(done: int, total: int, label: str) -> None:
    return None


def safe_key(text: str) -> str:
    """A file-name-safe version of a unit key (spec strings contain ':', '/', '=')."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:180]


def _json_default(value: Any):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite(json.loads(json.dumps(data, default=_json_default))), indent=1, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


class UnitStore:
    """Finished units of one study at one budget, one JSON file each."""

    def __init__(self, study_dir: Path, budget: str):
        self.directory = Path(study_dir) / "units" / budget
        self.work_dir = Path(study_dir) / ".work" / budget
        self.reused = 0
        self.computed = 0

    def path(self, key: str) -> Path:
        return self.directory / f"{safe_key(key)}.json"

    def get(self, key: str, config: dict) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a torn or foreign file: recompute the unit
        wanted = json.loads(json.dumps(config, default=_json_default))
        if not isinstance(saved, dict) or saved.get("config") != wanted or "result" not in saved:
            return None
        return saved["result"]

    def put(self, key: str, config: dict, result: dict) -> None:
        write_json(self.path(key), {"key": key, "config": config, "result": result,
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def run(self, key: str, config: dict, compute: Callable[[], dict]) -> dict:
        """The saved result of ``key`` if it has one for ``config``, else ``compute()`` (then saved)."""
        saved = self.get(key, config)
        if saved is not None:
            self.reused += 1
            return saved
        started = time.perf_counter()
        result = compute()
        result.setdefault("unit_time_s", round(time.perf_counter() - started, 3))
        self.put(key, config, result)
        self.computed += 1
        return result


@dataclass
class Table:
    """A table for the report: ``rows`` are lists matching ``columns``; ``paper`` is the paper's own
    table (same shape rules) shown beside ours, or None."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    paper: dict | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "columns": self.columns, "rows": self.rows,
                "caption": self.caption, "paper": self.paper}


@dataclass
class Series:
    """Curves (e.g. a metric over epochs) for the app to draw interactively."""

    id: str
    title: str
    x_label: str
    y_label: str
    lines: list[dict] = field(default_factory=list)  # {"label", "x", "y", optional "y_std"}

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "x_label": self.x_label, "y_label": self.y_label,
                "lines": self.lines}


def paper_table(title: str, columns: list[str], rows: list[list[Any]], source: str) -> dict:
    return {"title": title, "columns": columns, "rows": rows, "source": source}


# ---------------------------------------------------------------------------------------------
# metadata


def git_commit(start: Path | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the checkout holding attnviz (if any).

    "dirty" means tracked files outside ``reports/`` differ from the commit: a report rewriting its
    own earlier, committed files is not a change to the code that produced it.
    """
    here = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                 ":(top,exclude)reports"], cwd=here,
                                capture_output=True, text=True, timeout=20, check=True).stdout
        return {"commit": sha or None, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str]:
    from importlib import metadata

    import torch

    out = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        from attnviz import __version__

        out["attnviz"] = __version__
    except ImportError:  # pragma: no cover - attnviz is importable if this runs
        out["attnviz"] = "unknown"
    for dist in ("numpy", "grad-cam", "captum", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def device_label(device) -> str:
    from attnviz.device import describe_device

    text = describe_device(device)
    if device.type == "cpu":
        text += f"; {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores visible"
    return text


# ---------------------------------------------------------------------------------------------
# writing the report


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def new_figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, safe in any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path.name


@dataclass
class StudyRun:
    """Book-keeping of one invocation of a study: where it writes, its units, its clock."""

    study: str
    title: str
    budget: str
    out_dir: Path
    progress: Progress
    started: float = field(default_factory=time.perf_counter)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.directory = Path(self.out_dir) / self.study
        self.directory.mkdir(parents=True, exist_ok=True)
        self.units = UnitStore(self.directory, self.budget)

    def write(self, *, question: str, budget_detail: dict, seeds: list[int], device: str,
              tables: list[Table], series: list[Series], plots: list[dict], results: dict, reading: str,
              unit_times: Sequence[float]) -> Path:
        """Write report.json and report.md; returns report.json's path."""
        wall = time.perf_counter() - self.started
        meta = {
            "study": self.study,
            "budget": self.budget,
            "budget_detail": budget_detail,
            "seeds": list(seeds),
            "device": device,
            **git_commit(),
            "versions": versions(),
            "started": self.started_at,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_time_s": round(wall, 2),
            "compute_time_s": round(float(sum(unit_times)), 2),
            "units": len(unit_times),
            "units_reused": self.units.reused,
            "units_computed": self.units.computed,
            "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
            "command": f"attnviz experiment run {self.study} --budget {self.budget}",
        }
        report = {
            "format": REPORT_FORMAT,
            "study": self.study,
            "title": self.title,
            "question": question,
            "reading": reading,
            "notes": list(self.notes),
            "metadata": meta,
            "tables": [t.to_dict() for t in tables],
            "series": [s.to_dict() for s in series],
            "plots": plots,
            "results": results,
        }
        json_path = self.directory / "report.json"
        write_json(json_path, report)
        (self.directory / "report.md").write_text(render_markdown(report), encoding="utf-8")
        return json_path


def render_markdown(report: dict) -> str:
    meta = report["metadata"]
    lines = [f"# {report['title']}", "", report.get("question", ""), "",
             f"**Reading.** {report.get('reading', '')}", ""]
    for note in report.get("notes", []):
        lines.append(f"> Note: {note}")
    if report.get("notes"):
        lines.append("")
    lines += [
        "## How this was made",
        "",
        f"- Command: `{meta['command']}`",
        f"- Budget: **{meta['budget']}** — " + "; ".join(f"{k}: {v}" for k, v in meta["budget_detail"].items()),
        f"- Device: {meta['device']}",
        f"- Seeds: {', '.join(str(s) for s in meta['seeds'])}",
        f"- Commit: `{meta.get('commit')}`" + (" (with uncommitted changes)" if meta.get("dirty") else ""),
        f"- Wall time of this invocation: {meta['wall_time_s']:.0f} s; compute time summed over the "
        f"{meta['units']} units: {meta['compute_time_s']:.0f} s ({meta['units_reused']} reused from an "
        "earlier invocation)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
    ]
    for table in report["tables"]:
        lines += [f"## {table['title']}", ""]
        if table.get("caption"):
            lines += [table["caption"], ""]
        lines += [markdown_table(table["columns"], table["rows"]), ""]
        paper = table.get("paper")
        if paper:
            lines += [f"*The paper ({paper['source']}): {paper['title']}*", "",
                      markdown_table(paper["columns"], paper["rows"]), ""]
    for plot in report.get("plots", []):
        lines += [f"![{plot['title']}]({plot['file']})", "", plot.get("caption", ""), ""]
    return "\n".join(lines).rstrip() + "\n"


def open_study(study_id: str, title: str, budgets: dict, budget: str, out_dir, progress: Progress | None):
    """The start every checkpoint-reading study shares: ``(plan, study, dataset, data_label)`` for a
    checked budget, a :class:`StudyRun` reporting to ``progress`` (``study.progress``) and the budget's
    CIFAR-10 source (``attnviz.experiments.training.load_cifar``)."""
    from attnviz.experiments.training import load_cifar

    plan = budgets[check_budget(budget)]
    study = StudyRun(study_id, title, budget, out_dir, progress or _no_progress)
    dataset, data_label = load_cifar(budget, None)
    return plan, study, dataset, data_label


def training_unit_times(runs: dict[str, list[dict]]) -> list[float]:
    """The ``unit_time_s`` of every trained unit of ``{variant: [one result per seed]}`` (for ``write``)."""
    return [r["unit_time_s"] for results in runs.values() for r in results if "unit_time_s" in r]
