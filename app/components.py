"""Widget groups and figure builders for the attnviz pages.

Figure builders take plain values (numpy arrays, lists, dicts) and return Plotly figures; they never
touch a model. Widget groups wrap a few Streamlit widgets that several pages share. Colour scales are
fixed here (not per call) so the same quantity looks the same on every page and for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

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


# --------------------------------------------------------------------------------------- activations
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


# -------------------------------------------------------------------------------------------- tables
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
