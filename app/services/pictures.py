"""Pictures and what one model makes of them: decoding, probes, inspections (cached per weights hash and picture), overlays, the comparison report."""

from __future__ import annotations

import functools
from collections.abc import Callable

import streamlit as st

from profiling import in_this_rerun, phase
from services.models import _count, load_model, zoo_by_id


@st.cache_data(show_spinner=False)
def gallery() -> dict[str, list[str]]:
    """class -> paths of the shipped sample test images (the offline gallery)."""
    from attnviz.paths import SAMPLE_DIR

    test = SAMPLE_DIR / "test"
    return {d.name: sorted(str(p) for p in d.glob("*.jpg")) for d in sorted(test.iterdir()) if d.is_dir()}


@st.cache_resource(show_spinner=False, max_entries=128)
def _picture(digest: str, name: str, _data: bytes):
    from attnviz.analysis.inspection import read_picture

    return read_picture(name, _data)


def decode(name: str, data: bytes):
    """An input picture as an `attnviz.analysis.inspection.Picture` (decoded once per process and content): a bad
    file gets ``error`` = one sentence and no picture; it never raises."""
    import hashlib

    with phase("decode"):
        return _picture(hashlib.sha256(data).hexdigest(), name, data)


def _inputs(card: dict, pictures: list):
    from attnviz.images import preprocess

    return preprocess([picture.source for picture in pictures], card)


def _np(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return value


def _weights(model_id: str) -> str | None:
    """The model's weights hash: part of every result cache key, so a run that is still training (new
    weights after each epoch, same zoo id) is never answered from an older epoch's results."""
    row = zoo_by_id().get(model_id)
    return row["weights_sha256"] if row else None


def probe_images(model_id: str, digests: tuple[str, ...], pictures: list) -> dict:
    """One forward pass with every attention tap recorded (`attnviz.probe`), as numpy:
    ``{"probs": [N, K], "sites": {site: {"kind", "channel_weights", "hidden", "spatial", ...}},
    "excitation_inputs": [N, units]}`` (every SE site's hidden pre-activation, `ProbeResult.excitation_inputs`)."""
    with phase("probe"):
        return _probe_images(model_id, _weights(model_id), digests, pictures)


@st.cache_data(show_spinner=False, max_entries=512)
def _probe_images(model_id: str, sha256: str | None, digests: tuple[str, ...], _pictures: list) -> dict:
    from attnviz.analysis.probes import probe

    _count("probe")
    with phase("probe: model load"):
        model, card = load_model(model_id)
    with phase("probe: compute"):
        result = probe(model, _inputs(card, _pictures))
    sites = {}
    for site in result:
        fields = {k: _np(v) for k, v in vars(site).items() if k not in ("taps",)}
        sites[site.site] = fields
    return {"probs": _np(result.probs), "sites": sites, "excitation_inputs": _np(result.excitation_inputs())}

# Inspections are cached per picture (not per set of pictures): adding a picture to a page then computes
# that picture alone, which matters most when several sessions share the cores.
def inspect(model_id: str, digest: str, picture, method: str = "gradcam", target="predicted",
            layer: str | None = None, scores: bool = False, masks: bool = False, branches: bool = False):
    """What one model makes of one picture (`attnviz.analysis.inspection.inspect_picture`): an ``Inspection``."""
    with phase("inspect"):
        return _inspect(model_id, _weights(model_id), digest, picture, method, target, layer, scores, masks, branches)


@st.cache_data(show_spinner=False, max_entries=2048)
def _inspect(model_id: str, sha256: str | None, digest: str, _picture, method: str, target, layer: str | None,
             scores: bool, masks: bool, branches: bool):
    from attnviz.analysis.inspection import inspect_picture

    _count("explain", *(["faithfulness"] if scores else []), *(["masks"] if masks else []))
    with phase("inspect: model load"):
        model, card = load_model(model_id)
    with phase("inspect: compute" + (" with scores" if scores else "")):
        return inspect_picture(model, card, _picture.source, method=method, target=target, layer=layer,
                               scores=scores, masks=masks, branches=branches, name=model_id)


def model_layers(model_id: str) -> dict:
    """Stage names and the default CAM layer of a model (for the layer picker)."""
    model, _ = load_model(model_id)
    return {"stages": list(model.stage_names), "default": model.default_cam_layer,
            "interflow": bool(getattr(model, "is_interflow", False))}


@st.cache_data(show_spinner=False)
def explain_methods() -> list[str]:
    from attnviz.analysis.explanations import METHODS

    return list(METHODS)


@st.cache_data(show_spinner=False)
def colormaps() -> list[str]:
    from attnviz.overlay import list_colormaps

    return list_colormaps()


def compare(model_ids: list[str], sources: list[tuple[str, bytes]], *, method: str, target, stage: int | None,
            scores: bool, masks: bool, colormap: str, opacity: float, mask_site: str = "deepest"):
    """Uploaded bytes -> every chosen model's heat maps over every picture, drawn
    (`attnviz.analysis.inspection.compare`): a ``Comparison``. Decoding and each (model, picture) inspection
    come from this process's caches, so a change of colour map or opacity only redraws; ``stage`` (1 = the
    first) picks each model's CAM layer, None its default."""
    from attnviz.analysis.inspection import compare as compare_pictures

    def inspect_one(model_id: str, picture):
        layer = model_layers(model_id)["stages"][stage - 1] if stage else None
        return inspect(model_id, picture.digest, picture, method, target, layer, scores=scores, masks=masks)

    with phase("compare"):
        return compare_pictures(model_ids, sources, in_this_rerun(inspect_one), read=decode, colormap=colormap,
                                opacity=opacity, mask_site=mask_site, executor=model_workers())


MODEL_WORKERS = 8


@st.cache_resource(show_spinner=False)
def model_workers():
    """The threads on which a rerun's models are inspected side by side (`attnviz.analysis.inspection.compare`):
    one user alone gets every core (each model's work runs on one torch thread, ATTNVIZ_THREADS). Shared
    by every session and long-lived, so no call starts fresh threads; ``MODEL_WORKERS`` of them, so that
    a classroom's reruns do not queue for a thread (they take turns per model at the model locks)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=MODEL_WORKERS, thread_name_prefix="attnviz-models")


def overlay_png(display, heatmap, colormap: str, opacity: float, vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """PNG of a heat map over the display picture in a square cell (`attnviz.analysis.inspection.heat_map_png`);
    not cached: cheap."""
    from attnviz.analysis.inspection import heat_map_png

    with phase("overlay png"):
        return heat_map_png(display, heatmap, colormap=colormap, opacity=opacity, vmin=vmin, vmax=vmax)


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions a page turns into one sentence (anything else is a bug and keeps its traceback)."""
    from attnviz.errors import AttnvizError

    return (AttnvizError,)


def comparison_report(model_ids: list[str], *, method: str, target: str, target_label: str, layer: str,
                      colormap: str, opacity: float, figures: list[dict], score_rows: list[dict]) -> Callable[[], str]:
    """The Inspect comparison as one self-contained HTML document (`attnviz.report`), rendered when called.

    Why deferred: ``st.download_button`` runs a callable only when the user clicks, so a rerun no longer
    builds a base64 copy of every map that most users never download, and a session, including a closed
    one Streamlit keeps for a while, holds only the report's parts (the same PNG bytes the grid shows)."""
    from attnviz.report import Report, ReportFigure, ReportModel, render_html

    zoo = zoo_by_id()  # read now: the callable runs on a thread of its own, outside this session's run
    models = [ReportModel(name=zoo[i]["name"], spec=zoo[i]["spec"], weights_sha256=zoo[i]["weights_sha256"],
                          source=zoo[i]["source"], dataset=zoo[i]["dataset"], test_acc=zoo[i]["test_acc"])
              for i in model_ids]
    report = Report(
        title="attnviz comparison",
        models=models,
        settings={"method": method, "target": f"{target_label} ({target})", "layer": layer,
                  "colour map": colormap, "overlay opacity": f"{opacity:.2f}",
                  "heat map scale": "each map in [0, 1]; module masks on their own [0, 1] values"},
        figures=[ReportFigure(png=f["png"], caption=f["caption"], row=f["row"], column=f["column"]) for f in figures],
        tables=[("Scores", score_rows)] if score_rows else [],
        notes=["Untrained models have random weights; their maps are noise."]
        if any(m.source == "untrained" for m in models) else [],
    )
    return functools.partial(render_html, report)


def usable_pictures(sources: list[tuple[str, bytes]], limit: int) -> list:
    """Decode the chosen pictures; each bad one gets one sentence in its place, the good ones come back."""
    pictures = [decode(name, data) for name, data in sources]
    for picture in pictures:
        if picture.error:
            st.warning(f"{picture.name} could not be used: {picture.error}.", icon=":material/broken_image:")
    return [picture for picture in pictures if picture.error is None][:limit]
