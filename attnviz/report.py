"""A comparison as one self-contained HTML file that records how to reproduce it.

The app's Inspect page downloads this: every picture is embedded as a PNG data URI (no external
files, scripts or fonts, so the file opens offline and can be archived), and a header table records
the models (spec, checkpoint name and weights sha256), the method, target and layer, and the versions
of attnviz, torch, pytorch-grad-cam and captum that made it. Text is HTML-escaped everywhere.
"""

from __future__ import annotations

import base64
import html
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def library_versions() -> dict[str, str]:
    """Versions of the packages a comparison depends on ('not installed' when one is missing)."""
    out = {}
    for label, dist in (("attnviz", "attnviz"), ("torch", "torch"), ("grad-cam", "grad-cam"),
                        ("captum", "captum"), ("numpy", "numpy"), ("pillow", "pillow")):
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[label] = "not installed"
    out["python"] = platform.python_version()
    return out


@dataclass
class ReportFigure:
    """One picture of the report: PNG bytes with a caption, placed in a grid cell (row, column)."""

    png: bytes
    caption: str = ""
    row: str = ""
    column: str = ""


@dataclass
class ReportModel:
    name: str
    spec: str
    weights_sha256: str | None = None
    source: str = ""
    dataset: str = ""
    test_acc: float | None = None


@dataclass
class Report:
    title: str
    models: list[ReportModel]
    settings: dict[str, str]
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def png_data_uri(png: bytes) -> str:
    if not png.startswith(_PNG_MAGIC):
        raise ValueError("report figures must be PNG bytes")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(rows: Sequence[dict]) -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_html(report: Report, *, created: float | None = None) -> str:
    """The report as one HTML document (UTF-8 text)."""
    created_text = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(created or time.time()))
    versions = library_versions()
    model_rows = [
        {"model": m.name, "spec": m.spec, "source": m.source, "dataset": m.dataset,
         "test accuracy": None if m.test_acc is None else f"{100 * m.test_acc:.2f}%",
         "weights sha256": m.weights_sha256 or "(untrained: no weights)"}
        for m in report.models
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(report.title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#18181b}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #d4d4d8;padding:4px 8px;"
        "font-size:13px;text-align:left}th{background:#f4f4f5}.grid{display:grid;gap:12px;margin-bottom:1.5em}"
        "figure{margin:0}figure img{width:100%;image-rendering:pixelated;border:1px solid #e4e4e7}"
        "figcaption{font-size:12px;color:#52525b}code{background:#f4f4f5;padding:1px 4px}</style></head><body>",
        f"<h1>{_esc(report.title)}</h1>",
        f"<p>Made {_esc(created_text)} by attnviz {_esc(versions.get('attnviz'))}.</p>",
        "<h2>Settings</h2>",
        _table([{"setting": k, "value": v} for k, v in report.settings.items()]),
        "<h2>Models</h2>",
        _table(model_rows),
    ]
    if report.figures:
        rows = list(dict.fromkeys(f.row for f in report.figures))
        columns = list(dict.fromkeys(f.column for f in report.figures))
        parts.append("<h2>Pictures</h2>")
        parts.append(f"<div class='grid' style='grid-template-columns:repeat({len(columns)},minmax(120px,1fr))'>")
        cells = {(f.row, f.column): f for f in report.figures}
        for row in rows:
            for column in columns:
                fig = cells.get((row, column))
                if fig is None:
                    parts.append("<div></div>")
                    continue
                label = " · ".join(x for x in (row, column) if x)
                caption = " — ".join(x for x in (label, fig.caption) if x)
                parts.append(f"<figure><img alt='{_esc(label)}' src='{png_data_uri(fig.png)}'>"
                             f"<figcaption>{_esc(caption)}</figcaption></figure>")
        parts.append("</div>")
    for title, rows in report.tables:
        parts.append(f"<h2>{_esc(title)}</h2>")
        parts.append(_table(rows))
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("<h2>Versions</h2>")
    parts.append(_table([{"package": k, "version": v} for k, v in versions.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)
