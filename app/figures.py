"""Figure builders for the attnviz pages: plain values (numpy arrays, lists, dicts) in, Plotly figures
(or, where interaction adds nothing and drawing cost matters, a PNG) out; they never touch a model. Colour scales are fixed here (not per call) so the same quantity looks
the same on every page and for every model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go


def short_site(site: str) -> str:
    """'layer2.1.attn' -> 'layer2.1' (the block), for axis labels."""
    return site[:-len(".attn")] if site.endswith(".attn") else site

# One colour per model position in the comparison, the same on every chart of every page.
MODEL_COLORS = ["#c2410c", "#1d4ed8", "#15803d", "#7e22ce", "#b45309", "#0e7490", "#be123c", "#4d7c0f",
                "#334155", "#a16207", "#9333ea", "#0f766e"]


# Attention weights are post-sigmoid, so [0, 1] is their whole range: one fixed scale for all of them.
WEIGHT_SCALE = "Viridis"


HEAT_SCALE = "Inferno"


DIVERGING_SCALE = "RdBu"


CURVE_COLORS = {
    "relu": "#1d4ed8", "felu": "#c2410c", "leaky_relu": "#15803d", "softplus": "#7e22ce",
    "sigmoid": "#b45309", "softsign": "#0e7490", "elu": "#be123c", "gelu": "#4d7c0f", "silu": "#334155",
}


def model_color(index: int) -> str:
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def _layout(fig: go.Figure, *, height: int = 360, title: str | None = None) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        title=title,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
        hovermode="x unified",
    )
    return fig


def activation_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: dict[str, str],
    *,
    y_title: str,
    marker: tuple[float, float, str] | None = None,
) -> go.Figure:
    """Curves ``name -> (x, y)`` on one chart; ``marker`` = (x, y, text) pins one point (FeLU's minimum)."""
    fig = go.Figure()
    for name, (x, y) in curves.items():
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines", name=labels.get(name, name),
                line=dict(color=CURVE_COLORS.get(name), width=3 if name == "felu" else 2),
            )
        )
    if marker is not None:
        mx, my, text = marker
        fig.add_trace(
            go.Scatter(x=[mx], y=[my], mode="markers+text", name=text, text=[text],
                       textposition="bottom center", marker=dict(size=11, color="#c2410c", symbol="x"))
        )
    fig.add_hline(y=0, line=dict(color="#a1a1aa", width=1))
    fig.add_vline(x=0, line=dict(color="#a1a1aa", width=1))
    fig.update_xaxes(title="x")
    fig.update_yaxes(title=y_title)
    return _layout(fig)


def excitation_inputs_figure(values: np.ndarray, curve: tuple[np.ndarray, np.ndarray], *, label: str,
                             color: str) -> go.Figure:
    """The activation ``curve`` (x, f(x)) with one marker per excitation input of one picture, at (x, f(x))."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve[0], y=curve[1], mode="lines", name=label, line=dict(color=color, width=2)))
    fig.add_trace(go.Scatter(x=values.tolist(), y=np.interp(values, curve[0], curve[1]).tolist(), mode="markers",
                             name="this picture's hidden units", marker=dict(color=color, size=9, opacity=0.6,
                                                                          line=dict(color="#18181b", width=1))))
    fig.add_vline(x=0, line=dict(color="#a1a1aa", width=1))
    fig.add_hline(y=0, line=dict(color="#a1a1aa", width=1))
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    fig.update_xaxes(title="x = hidden pre-activation W1·z")
    fig.update_yaxes(title="f(x)")
    return _layout(fig, height=320)


def bar_figure(labels: Sequence[str], values: Sequence[float], *, colors: Sequence[str] | str | None = None,
               x_title: str = "", y_title: str = "", y_range: tuple[float, float] | None = None,
               height: int = 300, text_format: str = ".2f") -> go.Figure:
    """A simple bar chart with the values written on the bars."""
    fig = go.Figure(
        go.Bar(x=list(labels), y=list(values), marker_color=colors, texttemplate=f"%{{y:{text_format}}}",
               textposition="outside", cliponaxis=False)
    )
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, range=y_range)
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=height)


def cost_figure(rows: list[dict], colors: list[str]) -> go.Figure:
    """Parameters and CPU latency per model, as two bar charts side by side."""
    from plotly.subplots import make_subplots

    names = [r["name"] for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["parameters (thousands)", "CPU latency (ms, batch 1)"],
                        horizontal_spacing=0.12)
    fig.add_trace(go.Bar(x=names, y=[(r["params"] or 0) / 1e3 for r in rows], marker_color=colors,
                         texttemplate="%{y:.1f}k", textposition="outside", cliponaxis=False, showlegend=False),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[r["cpu_latency_ms"] for r in rows], marker_color=colors,
                         texttemplate="%{y:.2f}", textposition="outside", cliponaxis=False, showlegend=False),
                  row=1, col=2)
    fig.update_layout(hovermode="closest")
    fig = _layout(fig, height=320)
    fig.update_layout(margin=dict(t=40))
    return fig


def topk_figure(probs_by_model: dict[str, np.ndarray], class_names: list[str], colors: list[str],
                k: int = 5) -> go.Figure:
    """Horizontal bars: the top-k classes of each model for one picture, side by side."""
    from plotly.subplots import make_subplots

    names = list(probs_by_model)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.12)
    for col, (name, probs) in enumerate(probs_by_model.items(), start=1):
        order = np.argsort(-probs)[:k][::-1]
        labels = [class_names[i] if i < len(class_names) else str(i) for i in order]
        fig.add_trace(go.Bar(x=probs[order], y=labels, orientation="h", marker_color=colors[col - 1],
                             texttemplate="%{x:.0%}", textposition="outside", cliponaxis=False, showlegend=False,
                             name=name), row=1, col=col)
        fig.update_xaxes(range=[0, 1.15], tickformat=".0%", row=1, col=col)
    fig.update_annotations(font_size=12)
    fig.update_layout(hovermode="closest")
    fig = _layout(fig, height=70 + 28 * k, title=None)
    fig.update_layout(margin=dict(t=30))  # room for the per-model subplot titles
    return fig


def topk_html(probs_by_model: dict[str, np.ndarray], class_names: list[str], colors: list[str], k: int = 5) -> str:
    """The top-k classes of each model for one picture as HTML bars, side by side (what
    :func:`topk_figure` shows, without a chart: the Inspect page draws one per picture, and a Plotly
    chart there cost about as much to build and paint as a model's whole inspection,
    benchmarks/app_load.py). Names are escaped: a run's name is the user's text."""
    from html import escape

    columns = []
    for (name, probs), color in zip(probs_by_model.items(), colors, strict=True):
        order = np.argsort(-np.asarray(probs), kind="stable")[:k]
        rows = []
        for i in order:
            label = class_names[i] if i < len(class_names) else str(i)
            share = float(probs[i])
            rows.append(
                f'<div style="display:flex;align-items:center;gap:6px;font-size:0.8rem;line-height:1.5">'
                f'<span style="width:5.5em;text-align:right;opacity:0.8">{escape(label)}</span>'
                f'<span style="flex:1;height:0.75em;background:rgba(128,128,128,0.12);border-radius:2px">'
                f'<span style="display:block;height:100%;width:{share * 100:.1f}%;background:{color};'
                f'border-radius:2px"></span></span>'
                f'<span style="width:3em;font-variant-numeric:tabular-nums">{share:.0%}</span></div>')
        columns.append(f'<div style="flex:1;min-width:11em"><div style="font-size:0.8rem;font-weight:600;'
                       f'color:{color};margin-bottom:2px">{escape(name)}</div>{"".join(rows)}</div>')
    return f'<div style="display:flex;gap:1.5em;flex-wrap:wrap">{"".join(columns)}</div>'


CURVE_PANEL_TITLES = ("Deletion: hottest pixels removed first", "Insertion: hottest pixels restored first (on a blur)")


def curves_png(deletion: dict[str, np.ndarray], insertion: dict[str, np.ndarray], colors: list[str],
               *, width: int = 1100, height: int = 300) -> bytes:
    """Deletion and insertion curves (target probability vs fraction of pixels changed), one line per model,
    side by side in one PNG drawn with Pillow. A still picture: the two interactive charts it replaces cost
    every browser about 0.3 s of drawing per upload (benchmarks/app_load.py, issue 15), and hovering added
    nothing the scores under the maps do not say. Drawn at twice the size and averaged down: smooth lines."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    scale = 2
    image = Image.new("RGB", (width * scale, height * scale), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12 * scale)
    title_font = ImageFont.load_default(size=14 * scale)
    ink, grid = (63, 63, 70), (228, 228, 231)
    legend_h, left, right, top, bottom = 34 * scale, 62 * scale, 14 * scale, 28 * scale, 40 * scale
    panel_w = (width * scale) // 2
    for index, (curves, title) in enumerate(zip((deletion, insertion), CURVE_PANEL_TITLES, strict=True)):
        x0, x1 = index * panel_w + left, (index + 1) * panel_w - right
        y0, y1 = top, height * scale - legend_h - bottom
        draw.text((x0, 4 * scale), title, fill=ink, font=title_font)
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            x, y = x0 + tick * (x1 - x0), y1 - tick * (y1 - y0)
            draw.line([(x0, y), (x1, y)], fill=grid, width=scale)
            draw.line([(x, y1), (x, y1 + 4 * scale)], fill=ink, width=scale)
            draw.text((x, y1 + 6 * scale), f"{tick:.0%}", fill=ink, font=font, anchor="ma")
            if tick in (0.0, 0.5, 1.0):
                draw.text((x0 - 6 * scale, y), f"{tick:g}", fill=ink, font=font, anchor="rm")
        draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=ink, width=scale)
        draw.text(((x0 + x1) / 2, y1 + 22 * scale), "fraction of pixels", fill=ink, font=font, anchor="ma")
        label = Image.new("RGB", (int(draw.textlength("target probability", font=font)) + 4, 16 * scale), "white")
        ImageDraw.Draw(label).text((2, 0), "target probability", fill=ink, font=font)
        label = label.rotate(90, expand=True)
        image.paste(label, (index * panel_w + 2 * scale, int((y0 + y1) / 2 - label.height / 2)))
        for curve, color in zip(curves.values(), colors, strict=True):
            values = np.clip(np.asarray(curve, dtype=float), 0.0, 1.0)
            xs = np.linspace(x0, x1, len(values))
            draw.line(list(zip(xs, y1 - values * (y1 - y0), strict=True)), fill=color, width=2 * scale, joint="curve")
    x = left
    for name, color in zip(deletion, colors, strict=True):  # the legend, one entry per model
        y = height * scale - legend_h // 2
        draw.line([(x, y), (x + 22 * scale, y)], fill=color, width=3 * scale)
        draw.text((x + 28 * scale, y), name, fill=ink, font=font, anchor="lm")
        x += 28 * scale + int(draw.textlength(name, font=font)) + 24 * scale
    buffer = io.BytesIO()
    # an exact 2x2 box average: as smooth here as a Lanczos filter, and much cheaper to compute
    image.reduce(scale).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def live_curves_figure(summary: dict, *, metric: str) -> go.Figure:
    """One run's live curve: per-step training values (line) and per-epoch test values (markers).

    ``metric`` is "loss" or "acc"."""
    steps = summary["steps"]
    epochs = summary["epochs"]
    fig = go.Figure()
    if metric == "loss":
        fig.add_trace(go.Scatter(x=steps["epoch_float"], y=steps["loss"], mode="lines", name="train loss (running mean)",
                                 line=dict(color="#c2410c")))
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e.get("test_loss") for e in epochs],
                                 mode="lines+markers", name="test loss", line=dict(color="#1d4ed8", dash="dot")))
        fig.update_yaxes(title="cross-entropy", rangemode="tozero")
    else:
        fig.add_trace(go.Scatter(x=steps["epoch_float"], y=steps["train_acc"], mode="lines",
                                 name="train accuracy (running)", line=dict(color="#c2410c")))
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e.get("test_acc") for e in epochs],
                                 mode="lines+markers", name="test accuracy", line=dict(color="#1d4ed8", dash="dot")))
        fig.update_yaxes(title="accuracy", range=[0, 1], tickformat=".0%")
    fig.update_xaxes(title="epoch", rangemode="tozero")
    return _layout(fig, height=300)


def runs_overlay_figure(histories: dict[str, list[dict]], colors: list[str], *, key: str, y_title: str,
                        percent: bool = False) -> go.Figure:
    """Per-epoch curves of several runs on one chart (``key`` of each epoch dict, e.g. test_acc)."""
    fig = go.Figure()
    for (name, history), color in zip(histories.items(), colors, strict=True):
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in history], y=[h.get(key) for h in history],
                                 mode="lines+markers", name=name, line=dict(color=color)))
    fig.update_xaxes(title="epoch", dtick=1 if max((len(h) for h in histories.values()), default=0) <= 15 else None)
    fig.update_yaxes(title=y_title, tickformat=".0%" if percent else None, rangemode="tozero")
    return _layout(fig, height=320)


def site_bars_figure(values: dict[str, float], *, y_title: str, color: str = "#1d4ed8",
                     y_range: tuple[float, float] | None = (0, 1)) -> go.Figure:
    """One bar per attention site (e.g. its mean channel weight this epoch)."""
    return bar_figure(list(values), list(values.values()), colors=color, y_title=y_title, y_range=y_range,
                      height=280, text_format=".3f")


def block_channel_figure(weights: dict[str, np.ndarray], *, height: int | None = None) -> go.Figure:
    """Blocks (rows) x channels (columns) of channel weights on the fixed [0, 1] scale.

    Stages have different widths (16/32/64 in ResNet-20): narrower rows are padded with blanks."""
    sites = list(weights)
    width = max(len(w) for w in weights.values())
    grid = np.full((len(sites), width), np.nan)
    for i, site in enumerate(sites):
        grid[i, : len(weights[site])] = weights[site]
    fig = go.Figure(go.Heatmap(z=grid, x=list(range(width)), y=[short_site(s) for s in sites], zmin=0, zmax=1,
                               colorscale=WEIGHT_SCALE, colorbar=dict(title="weight", thickness=12),
                               hovertemplate="%{y} channel %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="block")
    fig.update_xaxes(title="channel")
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=height or 80 + 22 * len(sites))


def channel_bars_figure(series: dict[str, np.ndarray], colors: list[str]) -> go.Figure:
    """Channel weights of one block for one or two pictures (grouped bars, [0, 1] axis)."""
    fig = go.Figure()
    for (name, values), color in zip(series.items(), colors, strict=True):
        fig.add_trace(go.Bar(x=list(range(len(values))), y=values, name=name, marker_color=color))
    fig.update_layout(barmode="group", hovermode="x")
    fig.update_xaxes(title="channel")
    fig.update_yaxes(title="channel weight", range=[0, 1])
    return _layout(fig, height=280)


CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]


def profiles_figure(mean: np.ndarray, class_names: list[str], *, title: str) -> go.Figure:
    """Class-wise mean excitation of one block: one line per class across its channels (SE paper fig. 6)."""
    fig = go.Figure()
    for k, name in enumerate(class_names):
        fig.add_trace(go.Scatter(x=list(range(mean.shape[1])), y=mean[k], mode="lines", name=name,
                                 line=dict(width=1.4, color=CLASS_COLORS[k % len(CLASS_COLORS)])))
    fig.update_xaxes(title="channel")
    fig.update_yaxes(title="mean weight", range=[0, 1])
    fig = _layout(fig, height=420, title=title)
    # ten classes wrap the legend onto several rows: below the axes, never over the title
    fig.update_layout(hovermode="closest", legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def lines_figure(series: dict[str, dict[str, float]], *, x_title: str, y_title: str) -> go.Figure:
    """One line per model over categorical x values (e.g. blocks), model colours by position."""
    fig = go.Figure([go.Scatter(x=list(values), y=list(values.values()), mode="lines+markers", name=name,
                                line=dict(color=model_color(i))) for i, (name, values) in enumerate(series.items())])
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, rangemode="tozero")
    return _layout(fig, height=300)


def branch_class_figure(matrix: np.ndarray, class_names: list[str], *, zmin=None, zmax=None, title: str = "",
                        colorscale: str = WEIGHT_SCALE, fmt: str = ".2f") -> go.Figure:
    """Branches (rows) x classes (columns), values written in the cells."""
    branches = [f"branch {i + 1}" for i in range(matrix.shape[0])]
    fig = go.Figure(go.Heatmap(z=matrix, x=class_names[: matrix.shape[1]], y=branches, zmin=zmin, zmax=zmax,
                               colorscale=colorscale, texttemplate=f"%{{z:{fmt}}}", textfont=dict(size=10),
                               colorbar=dict(thickness=12), hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=90 + 34 * matrix.shape[0], title=title or None)


def contributions_figure(contrib: np.ndarray, class_names: list[str], classes: list[int]) -> go.Figure:
    """Stacked bars: each branch's weighted logit w_b * z_b,k for the given classes; the sum is the output."""
    fig = go.Figure()
    palette = ["#93c5fd", "#3b82f6", "#1d4ed8", "#1e3a8a", "#172554"]
    for b in range(contrib.shape[0]):
        fig.add_trace(go.Bar(x=[class_names[k] for k in classes], y=[contrib[b, k] for k in classes],
                             name=f"branch {b + 1}", marker_color=palette[b % len(palette)]))
    totals = contrib.sum(axis=0)
    fig.add_trace(go.Scatter(x=[class_names[k] for k in classes], y=[totals[k] for k in classes], mode="markers+text",
                             name="aggregated logit", text=[f"{totals[k]:.2f}" for k in classes],
                             textposition="top center", marker=dict(symbol="line-ew-open", size=28, color="#18181b",
                                                                    line=dict(width=3))))
    fig.update_layout(barmode="relative", hovermode="x")
    fig.update_yaxes(title="weighted logit")
    return _layout(fig, height=320)
