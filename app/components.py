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


# ------------------------------------------------------------------------------------ sidebar groups
SOURCE_TAG = {"shipped": "", "your run": " · your run", "untrained": " · untrained"}


def model_label(row: dict) -> str:
    acc = row.get("test_acc")
    acc_text = f" · {100 * acc:.1f}%" if acc is not None else ""
    return f"{row['name']}{acc_text}{SOURCE_TAG.get(row['source'], '')}"


def model_picker(rows: list[dict], default_ids: list[str]) -> list[str]:
    """The sidebar's 'models to compare': one choice shared by every page of the session and mirrored
    in the URL (``?models=ID&models=ID``, zoo ids) so a view can be shared by copying the address."""
    by_id = {row["id"]: row for row in rows}
    if "models" not in st.session_state:
        from_url = [i for i in st.query_params.get_all("models") if i in by_id]
        st.session_state["models"] = from_url or [i for i in default_ids if i in by_id]
    else:  # a model that left the zoo (a deleted run) leaves the choice too
        st.session_state["models"] = [i for i in st.session_state["models"] if i in by_id][:8]
    chosen = st.sidebar.multiselect(
        "Models to compare", list(by_id), format_func=lambda i: model_label(by_id[i]) if i in by_id else i,
        key="models", persist_state="session", max_selections=8,
        help="Pick on the Zoo page or here; the choice holds on every page and is kept in the URL.",
    )
    if st.query_params.get_all("models") != chosen:
        st.query_params["models"] = chosen
    if any(by_id[i]["source"] == "untrained" for i in chosen):
        st.sidebar.warning("Untrained models have random weights: their maps and predictions are noise, "
                           "shown only to explain the architecture.", icon=":material/warning:")
    return chosen


def device_badge(report: dict) -> None:
    """Bottom of the sidebar: where the app computes and how fast that machine is."""
    st.sidebar.divider()
    st.sidebar.caption(
        f":material/memory: **{report['description']}** · {report['gflops']:g} GFLOP/s (float32 matmul) · "
        f"ResNet-20 CPU forward {report['resnet20_cpu_ms']:.1f} ms (batch 1), measured when the server started."
    )


# ---------------------------------------------------------------------------------------------- zoo
ZOO_COLUMNS = {
    "model": st.column_config.TextColumn("model", width="medium"),
    "source": st.column_config.TextColumn("source", help="shipped, your run, or untrained (random weights)"),
    "params (M)": st.column_config.NumberColumn("params (M)", format="%.3f"),
    "FLOPs (M)": st.column_config.NumberColumn("FLOPs (M)", format="%.1f", help="per 32x32 image, multiply-add = 2"),
    "test acc %": st.column_config.NumberColumn("test acc %", format="%.2f"),
    "CPU ms": st.column_config.NumberColumn("CPU ms", format="%.2f", help="median batch-1 forward on this CPU"),
}


def short_hash(value) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def zoo_table(rows: list[dict]) -> list[dict]:
    """Display rows for the zoo table (one per model, plain values)."""
    out = []
    for r in rows:
        out.append({
            "model": r["name"], "source": r["source"], "spec": r["spec"], "attention": r["attention"],
            "activation": r["activation"], "interflow": r["interflow"], "dataset": r["dataset"],
            "params (M)": None if r["params"] is None else r["params"] / 1e6,
            "FLOPs (M)": None if r["flops"] is None else r["flops"] / 1e6,
            "test acc %": None if r["test_acc"] is None else 100 * r["test_acc"],
            "CPU ms": r["cpu_latency_ms"],
        })
    return out


def cost_figure(rows: list[dict], colors: list[str]) -> go.Figure:
    """Parameters (bars, left axis) and CPU latency (markers, right axis) per model."""
    names = [r["name"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[(r["params"] or 0) / 1e6 for r in rows], marker_color=colors,
                         name="params (M)", texttemplate="%{y:.3f}M", textposition="outside", cliponaxis=False))
    fig.add_trace(go.Scatter(x=names, y=[r["cpu_latency_ms"] for r in rows], mode="markers", yaxis="y2",
                             name="CPU ms", marker=dict(symbol="diamond", size=13, color="#18181b")))
    fig.update_layout(yaxis=dict(title="parameters (millions)"),
                      yaxis2=dict(title="CPU latency (ms)", overlaying="y", side="right", rangemode="tozero"),
                      hovermode="x")
    return _layout(fig, height=320)


# ------------------------------------------------------------------------------------------- images
METHOD_LABELS = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiRes-CAM",
    "layercam": "LayerCAM", "eigencam": "EigenCAM (class-agnostic)", "scorecam": "Score-CAM (slow)",
    "integrated_gradients": "Integrated Gradients", "saliency": "Saliency", "guided_backprop": "Guided Backprop",
    "occlusion": "Occlusion (slow)",
}


def image_inputs(gallery: dict[str, list[str]], *, key: str, default_gallery: int = 3,
                 max_images: int = 8, multiple: bool = True) -> list[tuple[str, bytes]]:
    """Pictures from the shipped gallery, uploads and the camera, as (name, bytes) in that order.

    Nothing is decoded here: every byte string goes through `attnviz.images` in `services.decode`.
    """
    from pathlib import Path

    labels = {f"{cls} · {Path(p).stem}": p for cls, paths in gallery.items() for p in paths}
    # a spread of classes as the default: the first image of every third class
    defaults = [f"{cls} · {Path(paths[0]).stem}" for cls, paths in list(gallery.items())[::3] if paths]
    source_tabs = st.tabs([":material/photo_library: Gallery", ":material/upload: Upload", ":material/photo_camera: Camera"])
    with source_tabs[0]:
        picked = st.multiselect(
            "Sample images (CIFAR-10 test set, shipped with attnviz)", list(labels),
            default=defaults[:default_gallery] if multiple else defaults[:1], key=f"{key}_gallery",
            max_selections=max_images if multiple else 1,
        )
    with source_tabs[1]:
        uploads = st.file_uploader(
            "Your images (JPEG, PNG, WebP, GIF, BMP or TIFF, up to 10 MB each)", accept_multiple_files=multiple,
            key=f"{key}_upload",
        )
    with source_tabs[2]:
        use_camera = st.toggle("Use the camera", key=f"{key}_camera_on")
        shot = st.camera_input("Take a picture", key=f"{key}_camera") if use_camera else None
    sources: list[tuple[str, bytes]] = []
    for label in picked:
        sources.append((label, Path(labels[label]).read_bytes()))
    if uploads:
        for upload in uploads if isinstance(uploads, list) else [uploads]:
            sources.append((upload.name, upload.getvalue()))
    if shot is not None:
        sources.append(("camera", shot.getvalue()))
    if len(sources) > max_images:
        st.info(f"Showing the first {max_images} of {len(sources)} pictures.")
        sources = sources[:max_images]
    return sources


def topk_figure(probs_by_model: dict[str, "np.ndarray"], class_names: list[str], colors: list[str],
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
    return _layout(fig, height=60 + 28 * k, title=None)


def curves_figure(curves: dict[str, np.ndarray], colors: list[str], *, y_title: str) -> go.Figure:
    """Deletion or insertion curves (target probability vs fraction of pixels changed), one per model."""
    fig = go.Figure()
    for (name, curve), color in zip(curves.items(), colors, strict=True):
        x = np.linspace(0, 1, len(curve))
        fig.add_trace(go.Scatter(x=x, y=curve, mode="lines", name=name, line=dict(color=color)))
    fig.update_xaxes(title="fraction of pixels", tickformat=".0%")
    fig.update_yaxes(title=y_title, range=[0, 1])
    return _layout(fig, height=260)


def target_label(choice: str, class_names: list[str]) -> str:
    if choice == "predicted":
        return "the predicted class"
    if choice == "top3":
        return "each of the top 3 classes"
    index = int(choice.split(":")[1])
    return class_names[index] if index < len(class_names) else str(index)


def score_rows(models: list[dict], results: dict, scores: dict, images: list[dict], class_names: list[str]) -> list[dict]:
    """One row per (picture, model, target) with probabilities and faithfulness, for tables and reports."""
    rows = []
    for m in models:
        if m["id"] not in results:
            continue
        maps = [e for e in results[m["id"]]["maps"] if e["branch"] is None]
        for j, e in enumerate(maps):
            row = {"picture": images[e["image_index"]]["name"], "model": m["name"],
                   "target": class_names[e["target"]] if e["target"] < len(class_names) else e["target"],
                   "target probability": round(float(e["target_prob"]), 4),
                   "predicted": class_names[e["predicted"]] if e["predicted"] < len(class_names) else e["predicted"]}
            if m["id"] in scores:
                row["deletion AUC"] = round(scores[m["id"]][j]["deletion"], 4)
                row["insertion AUC"] = round(scores[m["id"]][j]["insertion"], 4)
            rows.append(row)
    return rows
