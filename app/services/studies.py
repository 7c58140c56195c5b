"""Dataset-wide readouts (excitation profiles, dead units on the sample set), sanity checks and interventions."""

from __future__ import annotations

import streamlit as st

from services.models import _count, load_model
from services.pictures import _inputs, probe_images


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
    """Class-wise excitation profiles over the sample test set (`attnviz.analysis.profiles.excitation_profiles`):
    ``{"sites", "kinds", "mean": {site: [K, C]}, "std", "counts", "specialisation", "class_names"}``."""
    from attnviz.analysis.profiles import excitation_profiles as _profiles

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
    (`attnviz.analysis.probes.dead_units`): ``{"per_site": {site: (dead, total)}, "fraction", "n_images"}``."""
    from attnviz.analysis.probes import dead_units as _dead_units
    from attnviz.analysis.probes import probe

    _count("dead_units")
    model, card = load_model(model_id)
    x, _, _ = _sample_batch(card, limit=n_images)
    result = _dead_units(probe(model, x))
    return {"per_site": result.per_site, "fraction": result.fraction, "n_images": int(x.shape[0])}


@st.cache_data(show_spinner=False, max_entries=32)
def lgam_gate_usage(model_id: str, sha256: str | None, n_images: int = 250):
    """Each LGAM site's gates on a fixed, class-balanced batch of sample test images
    (`attnviz.layers.lgam.gate_usage`) and the model-wide counts: a ``ModelGateUsage``."""
    from attnviz.analysis.probes import probe
    from attnviz.layers.lgam import ModelGateUsage, gate_usage

    _count("lgam_gate_usage")
    model, card = load_model(model_id)
    x, _, _ = _sample_batch(card, limit=n_images)
    result = probe(model, x)
    return ModelGateUsage({site.site: gate_usage(site.group_channel_weights, site.spatial)
                           for site in result if site.kind == "lgam"})


def lgam_spatial_reduce(model_id: str) -> str | None:
    """How the model's LGAM modules pool eq. (5) (`attnviz.layers.lgam.spatial_reduce_of`)."""
    from attnviz.layers.lgam import spatial_reduce_of

    return spatial_reduce_of(load_model(model_id)[0])


SANITY_METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop", "integrated_gradients")


@st.cache_data(show_spinner=False, max_entries=128)
def sanity_check(model_id: str, sha256: str | None, digest: str, _picture, methods: tuple[str, ...],
                 mode: str = "cascading") -> dict:
    """The model-parameter randomisation test for one picture (`attnviz.analysis.sanity.randomisation_test`, on a
    private copy of the shared model): ``{"labels", "heatmaps": {method: [step maps]}, "curves": {method:
    {metric: [per step]}}, "readouts": {"site:part": [per step]}, "verdicts", "reading", "target"}``."""
    from attnviz.analysis.sanity import METRICS, describe, randomisation_test

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
    """site -> {"kind", "methods", "channels", "branches"} (`attnviz.analysis.interventions.intervention_sites`)."""
    from attnviz.analysis.interventions import intervention_sites as _sites

    model, _ = load_model(model_id)
    return _sites(model)


def intervention_labels() -> dict[str, str]:
    from attnviz.analysis.interventions import LABELS

    return {**LABELS, "channel_mean": "channel weights -> their average over the sample set",
            "spatial_mean": "spatial mask -> its mean over the picture"}


@st.cache_data(show_spinner=False, max_entries=512)
def intervention_effect(model_id: str, sha256: str | None, digests: tuple[str, ...], _pictures: list, site: str,
                        method: str, k: int | None = None, branch: int | None = None) -> dict:
    """Predictions and Grad-CAM before / inside one intervention (`attnviz.analysis.interventions.intervention_effect`).

    ``channel_mean`` uses the site's average weights over the shipped sample's test images and
    ``channel_class_mean`` the average of the class the model predicts without the intervention (both from
    `excitation_profiles`); ``spatial_mean`` each picture's own spatial mean."""
    import numpy as np

    from attnviz.analysis.interventions import Intervention
    from attnviz.analysis.interventions import intervention_effect as _effect

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
