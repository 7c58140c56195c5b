"""The app's only cache layer: every `st.cache_*` wrapper around an attnviz call lives here.

Why one place: the pages stay thin (widgets in, one call, figures out), and the rules about shared
models are enforced once:
- models are `st.cache_resource` objects shared by every session of the process, loaded once each
  (``LOAD_COUNTS`` proves it), put in ``eval()`` with ``requires_grad_(False)`` and never mutated;
- whatever hooks or back-propagates a shared model (probes, CAMs) takes that model's lock inside the
  attnviz call itself (`attnviz.locks.model_lock`), so nothing here needs to lock;
- heavy results are `st.cache_data` keyed by (model id, image digest, method, ...), so changing a
  display-only setting never reruns a forward pass.
torch-heavy modules are imported inside the functions so that the first paint of a page does not
wait for them.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import streamlit as st

# model id -> number of times its weights were loaded in this process (the cache makes it 1)
LOAD_COUNTS: Counter[str] = Counter()
_COUNT_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------- activations
@st.cache_data(show_spinner=False, max_entries=256)
def activation_curves(name: str, lo: float, hi: float, n: int = 801):
    """(x, y, dy) arrays of one activation on [lo, hi] (`attnviz.layers.activations.sample_activation`)."""
    from attnviz.layers.activations import sample_activation

    return sample_activation(name, lo, hi, n)


@st.cache_data(show_spinner=False)
def activation_registry() -> dict[str, dict]:
    """name -> {label, latex, in_felu_paper} of every registered activation."""
    from attnviz.layers.activations import ACTIVATIONS

    return {name: {"label": info.label, "latex": info.latex, "in_felu_paper": info.in_felu_paper}
            for name, info in ACTIVATIONS.items()}


@st.cache_data(show_spinner=False)
def felu_minimum() -> tuple[float, float]:
    from attnviz.layers.activations import felu_minimum as _felu_minimum

    return _felu_minimum()


# ------------------------------------------------------------------------------------------ the zoo
def _runs_fingerprint() -> tuple:
    """Cheap signature of the shipped and run checkpoint folders: a finished run changes it."""
    from attnviz.checkpoints import checkpoint_dirs
    from attnviz.paths import runs_dir

    runs = runs_dir()
    paths = [*checkpoint_dirs(), *(runs.iterdir() if runs.is_dir() else [])]
    out = []
    for path in paths:
        try:
            out.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_rows(fingerprint: tuple) -> list[dict]:
    from attnviz.catalog import zoo_rows

    return [row.as_dict() for row in zoo_rows()]


def zoo_rows() -> list[dict]:
    """Every model of the zoo as plain dicts (`attnviz.catalog.zoo_rows`), refreshed when a run ends."""
    return _zoo_rows(_runs_fingerprint())


@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_costs(fingerprint: tuple) -> list[dict]:
    from attnviz.catalog import measure_costs, zoo_rows

    rows = measure_costs(zoo_rows(), latency=False)
    measured = device_report()["latencies"]  # taken at server start, the sidebar's numbers too
    for row in rows:
        row.cpu_latency_ms = measured.get(f"{row.spec}|{row.num_classes}")
    # a model that appeared after the server started (a finished run) is measured once, the same way
    measure_costs([row for row in rows if row.cpu_latency_ms is None])
    return [row.as_dict() for row in rows]


def zoo_rows_with_costs() -> list[dict]:
    """The zoo with params, FLOPs and the CPU latencies measured at server start (`device_report`)."""
    return _zoo_costs(_runs_fingerprint())


@st.cache_data(show_spinner=False, max_entries=64)
def zoo_note(path: str | None, sha256: str | None) -> str | None:
    """The card's ``zoo_note`` (why a shipped entry differs from the paper-literal spec), if any."""
    from attnviz.checkpoints import read_card
    from attnviz.errors import CheckpointError

    if not path:
        return None
    try:
        return read_card(Path(path)).get("zoo_note")
    except CheckpointError:
        return None


def zoo_by_id() -> dict[str, dict]:
    return {row["id"]: row for row in zoo_rows()}


@st.cache_data(show_spinner=False)
def spec_params(specs: list[str], num_classes: int = 10) -> dict[str, int | None]:
    from attnviz.catalog import spec_params as _spec_params

    return _spec_params(list(specs), num_classes)


# ------------------------------------------------------------------------------------------ models
@st.cache_resource(show_spinner=False, max_entries=24)
def _load_model(model_id: str, path: str | None, sha256: str | None):
    from attnviz.catalog import ZooRow, build_model

    row = ZooRow.from_dict(zoo_by_id()[model_id])
    model, card = build_model(row)  # eval() and requires_grad_(False) inside: shared read-only
    with _COUNT_LOCK:
        LOAD_COUNTS[model_id] += 1
    return model, card


def load_model(model_id: str):
    """(model, card) of a zoo model, loaded once per process and shared read-only by all sessions."""
    row = zoo_by_id().get(model_id)
    if row is None:
        from attnviz.errors import CheckpointError

        raise CheckpointError(f"There is no model '{model_id}' in the zoo.")
    return _load_model(model_id, row["path"], row["weights_sha256"])


# ------------------------------------------------------------------------------------ environment
@st.cache_resource(show_spinner=False)
def device_report() -> dict:
    """The compute device and its measured speed (`attnviz.catalog.device_report`), once per process."""
    from attnviz.catalog import device_report as _device_report

    return _device_report()


@st.cache_data(show_spinner=False)
def versions() -> dict[str, str]:
    from attnviz.report import library_versions

    return library_versions()


PREFERRED_DEFAULTS = ("resnet20-se", "resnet20-se-felu", "resnet20-lgam")


def default_model_ids(rows: list[dict]) -> list[str]:
    """What the pages show before the user picks: the SE, SE-FeLU and LGAM ResNet-20s when trained
    ones exist (shipped first, then your runs), else the untrained architectures of the same names."""
    chosen = []
    for source in ("shipped", "your run", "untrained"):
        for spec in PREFERRED_DEFAULTS:
            for row in rows:
                if row["source"] == source and row["spec"] == spec and spec not in {r[1] for r in chosen}:
                    chosen.append((row["id"], spec))
                    break
        if chosen:
            break
    return [row_id for row_id, _ in chosen]


def sidebar() -> list[str]:
    """The sidebar every page shows, drawn once by the entry file: the shared model choice (returned)
    and the device line."""
    import components as ui

    rows = zoo_rows()
    chosen = ui.model_picker(rows, default_model_ids(rows))
    ui.device_badge(device_report())
    return chosen


def chosen_models() -> list[str]:
    """The zoo ids picked in the sidebar (drawn by the entry file before the page runs)."""
    return list(st.session_state.get("models", []))


# ------------------------------------------------------------------------------------------ images
# model-side work done per (kind of result) in this process, for tests: a display-only change adds 0
COMPUTE_COUNTS: Counter[str] = Counter()


def _count(*kinds: str) -> None:
    with _COUNT_LOCK:
        for kind in kinds:
            COMPUTE_COUNTS[kind] += 1


@st.cache_data(show_spinner=False)
def gallery() -> dict[str, list[str]]:
    """class -> paths of the shipped sample test images (the offline gallery)."""
    from attnviz.paths import SAMPLE_DIR

    test = SAMPLE_DIR / "test"
    return {d.name: sorted(str(p) for p in d.glob("*.jpg")) for d in sorted(test.iterdir()) if d.is_dir()}


@st.cache_resource(show_spinner=False, max_entries=128)
def _picture(digest: str, name: str, _data: bytes):
    from attnviz.inspection import read_picture

    return read_picture(name, _data)


def decode(name: str, data: bytes):
    """An input picture as an `attnviz.inspection.Picture` (decoded once per process and content): a bad
    file gets ``error`` = one sentence and no picture; it never raises."""
    import hashlib

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
    return _probe_images(model_id, _weights(model_id), digests, pictures)


@st.cache_data(show_spinner=False, max_entries=512)
def _probe_images(model_id: str, sha256: str | None, digests: tuple[str, ...], _pictures: list) -> dict:
    from attnviz.probes import probe

    _count("probe")
    model, card = load_model(model_id)
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
    """What one model makes of one picture (`attnviz.inspection.inspect_picture`): an ``Inspection``."""
    return _inspect(model_id, _weights(model_id), digest, picture, method, target, layer, scores, masks, branches)


@st.cache_data(show_spinner=False, max_entries=2048)
def _inspect(model_id: str, sha256: str | None, digest: str, _picture, method: str, target, layer: str | None,
             scores: bool, masks: bool, branches: bool):
    from attnviz.inspection import inspect_picture

    _count("explain", *(["faithfulness"] if scores else []), *(["masks"] if masks else []))
    model, card = load_model(model_id)
    return inspect_picture(model, card, _picture.source, method=method, target=target, layer=layer,
                           scores=scores, masks=masks, branches=branches, name=model_id)


def model_layers(model_id: str) -> dict:
    """Stage names and the default CAM layer of a model (for the layer picker)."""
    model, _ = load_model(model_id)
    return {"stages": list(model.stage_names), "default": model.default_cam_layer,
            "interflow": bool(getattr(model, "is_interflow", False))}


@st.cache_data(show_spinner=False)
def explain_methods() -> list[str]:
    from attnviz.explanations import METHODS

    return list(METHODS)


@st.cache_data(show_spinner=False)
def colormaps() -> list[str]:
    from attnviz.overlay import list_colormaps

    return list_colormaps()


def overlay_png(display, heatmap, colormap: str, opacity: float, vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """PNG of a heat map over the display picture in a square cell (`attnviz.inspection.heat_map_png`);
    not cached: cheap."""
    from attnviz.inspection import heat_map_png

    return heat_map_png(display, heatmap, colormap=colormap, opacity=opacity, vmin=vmin, vmax=vmax)


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions a page turns into one sentence (anything else is a bug and keeps its traceback)."""
    from attnviz.errors import AttnvizError

    return (AttnvizError,)


def comparison_report(model_ids: list[str], *, method: str, target: str, target_label: str, layer: str,
                      colormap: str, opacity: float, figures: list[dict], score_rows: list[dict]) -> str:
    """The Inspect comparison as one self-contained HTML document (`attnviz.report`)."""
    from attnviz.report import Report, ReportFigure, ReportModel, render_html

    zoo = zoo_by_id()
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
    return render_html(report)


# -------------------------------------------------------------------------------------- training
def training_jobs():
    """The server's one training queue (`attnviz.jobs.get_jobs`): shared by every session."""
    from attnviz.jobs import get_jobs

    return get_jobs()


def check_archive(name: str, data: bytes):
    """An uploaded ImageFolder zip checked and kept for training (`attnviz.jobs.check_archive`)."""
    from attnviz.jobs import check_archive as _check

    return _check(data, name)


def start_run(**request):
    from attnviz.jobs import TrainRequest

    return training_jobs().submit(TrainRequest(**request))


def run_status(job_id: str):
    return training_jobs().status(job_id)


def run_summary(events: list[dict]) -> dict:
    from attnviz.jobs import summarize

    return summarize(events)


def list_runs():
    return training_jobs().list_runs()


@st.cache_data(show_spinner=False)
def trainable_specs() -> list[str]:
    """Every spec the registry builds, the zoo's first (the Train form's choices)."""
    from attnviz.catalog import ZOO_SPECS
    from attnviz.models.registry import list_models

    return list(dict.fromkeys([*ZOO_SPECS, *list_models()]))


@st.cache_data(show_spinner=False)
def default_recipe() -> dict:
    from dataclasses import asdict

    from attnviz.training import Recipe

    recipe = Recipe()
    return {**asdict(recipe), "resolved_lr": recipe.resolved_lr}


@st.cache_data(show_spinner=False, max_entries=8)
def _shipped_histories(fingerprint: tuple) -> dict[str, list[dict]]:
    from pathlib import Path

    from attnviz.checkpoints import read_card
    from attnviz.errors import AttnvizError

    out = {}
    for row in zoo_rows():
        if not row["shipped"] or not row["path"]:
            continue
        try:
            history = read_card(Path(row["path"])).get("history") or []
        except AttnvizError:
            continue
        if history:
            out[row["name"]] = history
    return out


def shipped_histories() -> dict[str, list[dict]]:
    """name -> per-epoch history from the shipped model cards that record one."""
    return _shipped_histories(_runs_fingerprint())


# ------------------------------------------------------------------------------------ dataset-wide
def _sample_batch(card: dict, limit: int | None = None):
    """The shipped sample's test split preprocessed for a model card: (x, labels, class names), or an
    AttnvizError when the model was not made for CIFAR-10-like 3-channel 10-class input."""
    from attnviz.data import load_dataset, preprocess
    from attnviz.errors import AttnvizError

    if int(card.get("num_classes", 10)) != 10 or int(card.get("in_chans", 3)) != 3:
        raise AttnvizError("this needs a model with 10 classes on colour images (the sample set is CIFAR-10)")
    data = load_dataset("sample")
    images, labels = data.test_images, data.test_labels
    if limit is not None:
        # a class-balanced, fixed subset: the first limit/10 images of every class
        per_class = max(1, limit // data.num_classes)
        subset = data.subset(test_per_class=per_class)
        images, labels = subset.test_images, subset.test_labels
    return preprocess(images, card["mean"], card["std"]), labels, list(data.class_names)


@st.cache_data(show_spinner=False, max_entries=32)
def excitation_profiles(model_id: str, sha256: str | None) -> dict:
    """Class-wise excitation profiles over the sample test set (`attnviz.profiles.excitation_profiles`):
    ``{"sites", "kinds", "mean": {site: [K, C]}, "std", "counts", "specialisation", "class_names"}``."""
    from attnviz.profiles import excitation_profiles as _profiles

    _count("profiles")
    model, card = load_model(model_id)
    x, labels, class_names = _sample_batch(card)
    batches = [(x[i:i + 250], labels[i:i + 250]) for i in range(0, x.shape[0], 250)]
    result = _profiles(model, batches, num_classes=10)
    return {"sites": result.sites, "kinds": result.kinds, "mean": result.mean, "std": result.std,
            "counts": result.counts, "specialisation": result.specialisation, "class_names": class_names}


@st.cache_data(show_spinner=False, max_entries=32)
def dead_units(model_id: str, sha256: str | None, n_images: int = 250) -> dict:
    """Dead SE excitation units on a fixed, class-balanced batch of sample test images
    (`attnviz.probes.dead_units`): ``{"per_site": {site: (dead, total)}, "fraction", "n_images"}``."""
    from attnviz.probes import dead_units as _dead_units
    from attnviz.probes import probe

    _count("dead_units")
    model, card = load_model(model_id)
    x, _, _ = _sample_batch(card, limit=n_images)
    result = _dead_units(probe(model, x))
    return {"per_site": result.per_site, "fraction": result.fraction, "n_images": int(x.shape[0])}


def usable_pictures(sources: list[tuple[str, bytes]], limit: int) -> list:
    """Decode the chosen pictures; each bad one gets one sentence in its place, the good ones come back."""
    pictures = [decode(name, data) for name, data in sources]
    for picture in pictures:
        if picture.error:
            st.warning(f"{picture.name} could not be used: {picture.error}.", icon=":material/broken_image:")
    return [picture for picture in pictures if picture.error is None][:limit]


# ------------------------------------------------------------------------- sanity and interventions
SANITY_METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop", "integrated_gradients")


@st.cache_data(show_spinner=False, max_entries=128)
def sanity_check(model_id: str, sha256: str | None, digest: str, _picture, methods: tuple[str, ...],
                 mode: str = "cascading") -> dict:
    """The model-parameter randomisation test for one picture (`attnviz.sanity.randomisation_test`, on a
    private copy of the shared model): ``{"labels", "heatmaps": {method: [step maps]}, "curves": {method:
    {metric: [per step]}}, "readouts": {"site:part": [per step]}, "verdicts", "reading", "target"}``."""
    from attnviz.sanity import METRICS, describe, randomisation_test

    _count("sanity")
    model, card = load_model(model_id)
    result = randomisation_test(model, _inputs(card, [_picture]), methods=list(methods), mode=mode, seed=0)
    return {"labels": result.labels, "randomised": [step.randomised for step in result.steps],
            "heatmaps": {m: [step.heatmaps[m][0] for step in result.steps] for m in result.methods},
            "curves": {m: {metric: result.curve(m, metric) for metric in METRICS} for m in result.methods},
            "readouts": {k: result.readout_curve(k) for k in result.readout_keys()},
            "predictions": [int(step.predictions[0]) for step in result.steps],
            "verdicts": result.verdicts(), "reading": describe(result), "target": int(result.targets[0])}


@st.cache_data(show_spinner=False, max_entries=64)
def intervention_sites(model_id: str, sha256: str | None) -> dict[str, dict]:
    """site -> {"kind", "methods", "channels", "branches"} (`attnviz.interventions.intervention_sites`)."""
    from attnviz.interventions import intervention_sites as _sites

    model, _ = load_model(model_id)
    return _sites(model)


def intervention_labels() -> dict[str, str]:
    from attnviz.interventions import LABELS

    return {**LABELS, "channel_mean": "channel weights -> their average over the sample set",
            "spatial_mean": "spatial mask -> its mean over the picture"}


@st.cache_data(show_spinner=False, max_entries=512)
def intervention_effect(model_id: str, sha256: str | None, digests: tuple[str, ...], _pictures: list, site: str,
                        method: str, k: int | None = None, branch: int | None = None) -> dict:
    """Predictions and Grad-CAM before / inside one intervention (`attnviz.interventions.intervention_effect`).

    ``channel_mean`` uses the site's average weights over the shipped sample's test images and
    ``channel_class_mean`` the average of the class the model predicts without the intervention (both from
    `excitation_profiles`); ``spatial_mean`` each picture's own spatial mean."""
    import numpy as np

    from attnviz.interventions import Intervention
    from attnviz.interventions import intervention_effect as _effect

    _count("intervention")
    model, card = load_model(model_id)
    x = _inputs(card, _pictures)
    value = classes = None
    if method in ("channel_mean", "channel_class_mean"):
        profiles = excitation_profiles(model_id, sha256)
        if site not in profiles["mean"]:
            from attnviz.errors import AttnvizError

            raise AttnvizError(f"{site} has no channel weights in the sample-set averages")
        table = np.asarray(profiles["mean"][site], dtype=np.float64)
        counts = np.asarray(profiles["counts"], dtype=np.float64)
        if method == "channel_mean":
            value = (counts[:, None] * table).sum(axis=0) / max(counts.sum(), 1.0)
        else:
            value = table
            classes = probe_images(model_id, digests, _pictures)["probs"].argmax(axis=1).tolist()
    intervention = Intervention(site, method, k=k, branch=branch, value=value, classes=classes)
    effect = _effect(model, x, [intervention], method="gradcam")
    return {"probs_before": effect.probs_before, "probs_after": effect.probs_after, "targets": effect.targets,
            "heatmaps_before": effect.heatmaps_before, "heatmaps_after": effect.heatmaps_after,
            "describe": intervention.describe(), "class_names": list(card.get("class_names") or [])}
