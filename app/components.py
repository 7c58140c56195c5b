"""Widget groups the attnviz pages share (model picker, picture inputs, the interventions panel) and the
small helpers they need; the figures are in ``figures.py``."""

from __future__ import annotations

import numpy as np
import streamlit as st

from figures import short_site, topk_figure

GRID_IMAGE_WIDTH = 240  # px: one heat map cell, the same for any number of models


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
    if any(not by_id[i]["trained"] for i in chosen):
        st.sidebar.warning("Untrained models have random weights: their maps and predictions are noise, "
                           "shown only to explain the architecture.", icon=":material/warning:")
    return chosen


def device_badge(report: dict) -> None:
    """Bottom of the sidebar: where the app computes and how fast that machine is."""
    st.sidebar.divider()
    st.sidebar.caption(
        f":material/memory: **{report['description']}** · {report['gflops']:g} GFLOP/s (float32 matmul) · "
        f"ResNet-20 CPU forward {report['resnet20_cpu_ms']:.1f} ms (batch 1; the Zoo table's number), "
        f"{report['latency_method']}, measured {report['latency_measured_at'] or 'when the server started'}."
    )


# ---------------------------------------------------------------------------------------------- zoo
ZOO_COLUMNS = {
    "model": st.column_config.TextColumn("model", width="medium"),
    "source": st.column_config.TextColumn("source", help="shipped, your run, or untrained (random weights)"),
    "params (M)": st.column_config.NumberColumn("params (M)", format="%.3f"),
    "FLOPs (M)": st.column_config.NumberColumn("FLOPs (M)", format="%.1f", help="per 32x32 image, multiply-add = 2"),
    "test acc %": st.column_config.NumberColumn("test acc %", format="%.2f"),
    "CPU ms": st.column_config.NumberColumn("CPU ms", format="%.2f", help="median batch-1 forward on this CPU"),
    "epochs": st.column_config.NumberColumn("epochs", format="%g", help="epochs trained"),
    "zoo recipe": st.column_config.TextColumn(
        "zoo recipe", help="shipped models: on the zoo's recipe and at its accuracy bar, below it, or "
                           "still an earlier, shorter recipe's checkpoint (checkpoints/README.md)"),
}


def short_hash(value) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def zoo_table(rows: list[dict]) -> list[dict]:
    """Display rows for the zoo table (one per model, plain values): what a model is and is worth first."""
    from attnviz.zoo.entries import standing

    out = []
    for r in rows:
        out.append({
            "model": r["name"],
            # next to the name, so a run of yours or an untrained row is told apart without scrolling right
            "source": r["source"] + ("" if r.get("status") in ("complete", "untrained", None) else f" ({r['status']})"),
            "test acc %": None if r["test_acc"] is None else 100 * r["test_acc"],
            "epochs": r.get("epochs"),
            "zoo recipe": standing(r["source"], r["spec"], r.get("epochs"), r["test_acc"]),
            "params (M)": None if r["params"] is None else r["params"] / 1e6,
            "FLOPs (M)": None if r["flops"] is None else r["flops"] / 1e6,
            "CPU ms": r["cpu_latency_ms"],
            "attention": r["attention"], "activation": r["activation"], "interflow": r["interflow"],
            "spec": r["spec"],
            "dataset": r["dataset"].rsplit("/", 1)[-1] if r["dataset"].startswith("imagefolder:") else r["dataset"],
        })
    return out


# ------------------------------------------------------------------------------------------- images
METHOD_LABELS = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiRes-CAM",
    "layercam": "LayerCAM", "eigencam": "EigenCAM (class-agnostic)", "scorecam": "Score-CAM (slow)",
    "integrated_gradients": "Integrated Gradients", "saliency": "Saliency", "guided_backprop": "Guided Backprop",
    "occlusion": "Occlusion (slow)",
}


OWN_PICTURES = "own_pictures"  # session state: {ident: (name, bytes, arrival)}, what the user gave on any page
OWN_PICTURES_MAX_BYTES = 64 * 1024 * 1024  # per session; past it the oldest are forgotten, and the page says so


def own_pictures() -> list[tuple[str, bytes]]:
    """Every picture the user gave in this session, on any page (uploads and camera shots), newest first."""
    store = st.session_state.get(OWN_PICTURES, {})
    order = sorted(store, key=lambda ident: -store[ident][2])  # stable: files that came together keep their order
    return [(store[ident][0], store[ident][1]) for ident in order]


def _remember(items: list[tuple[str, object]]) -> list[str]:
    """Add this page's uploads and camera shot to the session's pictures; returns the names forgotten to
    stay under ``OWN_PICTURES_MAX_BYTES`` (the oldest first)."""
    import hashlib

    store = st.session_state.setdefault(OWN_PICTURES, {})
    arrival = max((entry[2] for entry in store.values()), default=-1) + 1
    for offset, (name, item) in enumerate(items):
        data = item.getvalue()
        # by name and content: the same file uploaded again (or kept while another is added) is not new
        ident = f"{name}:{hashlib.sha256(data).hexdigest()}"
        if ident not in store:
            store[ident] = (name, data, arrival - offset / (len(items) + 1))
    forgotten = []
    while sum(len(entry[1]) for entry in store.values()) > OWN_PICTURES_MAX_BYTES and len(store) > 1:
        oldest = min(store, key=lambda ident: store[ident][2])
        forgotten.append(store.pop(oldest)[0])
    return forgotten


def forget_own_pictures() -> None:
    """Empty the session's pictures and the uploaders that hold them (a new uploader key empties one)."""
    st.session_state[OWN_PICTURES] = {}
    st.session_state["own_generation"] = st.session_state.get("own_generation", 0) + 1


def _uploader_key(key: str) -> str:
    generation = st.session_state.get("own_generation", 0)
    return f"{key}_upload" if not generation else f"{key}_upload_{generation}"


def _source_tabs(labels: list[str], defaults: list[str], *, key: str, max_images: int, multiple: bool):
    """The Gallery / Upload / Camera tabs: (gallery labels picked, [(name, uploaded file or shot)])."""
    source_tabs = st.tabs([":material/photo_library: Gallery", ":material/upload: Upload", ":material/photo_camera: Camera"])
    with source_tabs[0]:
        picked = st.multiselect(
            "Sample images (CIFAR-10 test set, shipped with attnviz)", labels, default=defaults,
            key=f"{key}_gallery", max_selections=max_images if multiple else 1,
        )
    with source_tabs[1]:
        uploads = st.file_uploader(
            "Your images (JPEG, PNG, WebP, GIF, BMP or TIFF, up to 10 MB each); every page of this session "
            "shows them", accept_multiple_files=multiple, key=_uploader_key(key),
        )
    with source_tabs[2]:
        use_camera = st.toggle("Use the camera", key=f"{key}_camera_on")
        shot = st.camera_input("Take a picture", key=f"{key}_camera") if use_camera else None
    given = [(u.name, u) for u in (uploads if isinstance(uploads, list) else [uploads]) if u is not None]
    return picked, given + ([("camera", shot)] if shot is not None else [])


def image_inputs(gallery: dict[str, list[str]], *, key: str, default_gallery: int = 3,
                 max_images: int = 8, multiple: bool = True) -> list[tuple[str, bytes]]:
    """The pictures to analyse as (name, bytes): the user's own first, then gallery picks.

    What the user gave, on this page or any other of the session (uploads and camera shots,
    :func:`own_pictures`), comes first, the most recent first; the gallery's preselected pictures apply
    only while nothing of the user's is there (pictures picked in the gallery by hand stay, after the
    user's). With more pictures than ``max_images`` a picker says so and lets the user choose; nothing
    is dropped silently. Nothing is decoded here: every byte string goes through
    `attnviz.analysis.inspection.read_picture` in `services.decode`.
    """
    from pathlib import Path

    labels = {f"{cls} · {Path(p).stem}": p for cls, paths in gallery.items() for p in paths}
    # a spread of classes as the default: the first image of every third class
    defaults = [f"{cls} · {Path(paths[0]).stem}" for cls, paths in list(gallery.items())[::3] if paths]
    defaults = defaults[:default_gallery] if multiple else defaults[:1]
    picked, given = _source_tabs(list(labels), defaults, key=key, max_images=max_images, multiple=multiple)
    forgotten = _remember(given)
    if forgotten:
        st.info(f"This session keeps up to {OWN_PICTURES_MAX_BYTES // 2**20} MB of your pictures; the oldest were "
                f"let go: {', '.join(forgotten)}.", icon=":material/photo_library:")
    own = own_pictures()
    if own:
        names, forget = st.columns([5, 1], vertical_alignment="center")
        set_aside = " The gallery's preselected samples are set aside; change the gallery pick to add samples." \
            if picked and picked == defaults else ""
        names.caption(f":material/photo_library: Your pictures (kept for this session, shown on every page): "
                      f"{', '.join(name for name, _ in own)}.{set_aside}")
        forget.button("Forget them", key=f"{key}_forget", on_click=forget_own_pictures,
                      help="Remove your pictures from this session (every page)")
    gallery_part = [] if (own and picked == defaults) else picked
    sources = own + [(label, Path(labels[label]).read_bytes()) for label in gallery_part]
    return sources if len(sources) <= max_images else _choose(sources, key=key, max_images=max_images)


def _choose(sources: list[tuple[str, bytes]], *, key: str, max_images: int) -> list[tuple[str, bytes]]:
    """More pictures than a page analyses at once: the user picks (the newest preselected), told what waits."""
    names = _unique_names([name for name, _ in sources])
    by_name = dict(zip(names, (data for _, data in sources), strict=True))
    if max_images == 1:  # a one-picture page; a new key when the pictures change, so the newest is shown
        one = st.selectbox("Picture to analyse (your own first, the latest first)", names,
                           key=f"{key}_analyse_one_{short_hash(names)}")
        return [(one, by_name[one])]
    chosen = st.multiselect(
        f"Pictures to analyse (at most {max_images} at a time; your own first, the latest first)", names,
        default=names[:max_images], max_selections=max_images, key=f"{key}_analyse",
    )
    left_out = [name for name in names if name not in chosen]
    st.info(f"{len(sources)} pictures are given and {max_images} can be analysed at once; not analysed now: "
            f"{', '.join(left_out)}. Pick others above.", icon=":material/filter_list:")
    return [(name, by_name[name]) for name in chosen]


def one_picture(key: str):
    """The single picture a one-picture page works on (gallery, upload or camera; `attnviz.analysis.inspection.Picture`);
    a page without one stops here with a hint. A bad file is reported in one sentence."""
    import services

    sources = image_inputs(services.gallery(), key=key, default_gallery=1, max_images=1, multiple=False)
    good = services.usable_pictures(sources, limit=1)
    if not good:
        st.info("Pick a picture.")
        st.stop()
    return good[0]


def _unique_names(names: list[str]) -> list[str]:
    """``a.png, a.png`` -> ``a.png, a.png (2)``: picker options must differ."""
    counts: dict[str, int] = {}
    out = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        out.append(name if counts[name] == 1 else f"{name} ({counts[name]})")
    return out


def target_label(choice: str, class_names: list[str]) -> str:
    if choice == "predicted":
        return "the predicted class"
    if choice == "top3":
        return "each of the top 3 classes"
    index = int(choice.split(":")[1])
    return class_names[index] if index < len(class_names) else str(index)


def score_rows(models: list[dict], results: dict, pictures: list, class_names: list[str]) -> list[dict]:
    """One row per (picture, model, target) with probabilities and faithfulness, for tables and reports;
    ``results[model id][picture index]`` is an `attnviz.analysis.inspection.Inspection`."""

    def name(index: int):
        return class_names[index] if index < len(class_names) else index

    rows = []
    for m in models:
        for picture, inspection in zip(pictures, results.get(m["id"], []), strict=False):
            for j, e in enumerate(inspection.own_maps):
                row = {"picture": picture.name, "model": m["name"], "target": name(e.target),
                       "target probability": round(float(e.target_prob), 4), "predicted": name(e.predicted)}
                if inspection.scores is not None:
                    row["deletion AUC"] = round(inspection.scores[j].deletion, 4)
                    row["insertion AUC"] = round(inspection.scores[j].insertion, 4)
                rows.append(row)
    return rows


def prediction_rows(pictures: list, models: list[dict], probs: dict[str, np.ndarray],
                    class_names: dict[str, list[str]]) -> list[dict]:
    """One row per model (as in the zoo table), one column per picture: its top class and probability
    (``probs[model id]``: [pictures, classes]); the columns are named by the pictures (unique)."""
    names = _unique_names([picture.name for picture in pictures])
    rows = []
    for model in models:
        if model["id"] not in probs:
            continue
        row = {"model": model["name"], "test acc %": None if model["test_acc"] is None else 100 * model["test_acc"]}
        labels = class_names.get(model["id"]) or []
        for name, p in zip(names, probs[model["id"]], strict=True):
            top = int(np.argmax(p))
            row[name] = f"{labels[top] if top < len(labels) else top} · {p[top]:.0%}"
        rows.append(row)
    return rows


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# ------------------------------------------------------------------------------------- channel maps


def pick_models(chosen: list[str], zoo: dict[str, dict], rows: list[dict], *, wanted, fallback_specs: list[str],
                what: str) -> list[dict]:
    """The chosen models a page can use (``wanted(row)``), else the zoo's ``fallback_specs`` (trained
    ones first), saying so on the page."""
    models = [zoo[i] for i in chosen if wanted(zoo[i])]
    if models:
        return models
    named = [r for r in rows if r["spec"] in fallback_specs or r["name"] in fallback_specs]  # zoo name or spec
    models = [r for r in named if r["trained"]] or named
    if models:
        st.info("None of the chosen models has " + what + ", so this page shows "
                + " and ".join(f"**{m['name']}**" for m in models) + ". Choose others in the sidebar.",
                icon=":material/info:")
    return models


def untrained_warning(models: list[dict]) -> None:
    if any(not m["trained"] for m in models):
        st.warning("Some models here are untrained: what they show comes from random weights and only "
                   "illustrates the mechanics.", icon=":material/warning:")


# ------------------------------------------------------------------------------------- interventions
def _intervention_row(effect: dict, index: int, item, class_names: list[str], *, key: str) -> bool:
    """One picture before and after an intervention (maps and top classes); True if its prediction changed."""
    import services

    before, after = effect["probs_before"][index], effect["probs_after"][index]
    target = effect["targets"][index]
    new = int(np.argmax(after))
    c_before, c_after, c_bars = st.columns([1, 1, 2])
    c_before.image(services.overlay_png(item.display, effect["heatmaps_before"][index], "jet", 0.5),
                   caption=f"before · {class_names[target]} {before[target]:.0%}", width="stretch")
    said = (f"{class_names[new]} {after[new]:.0%}" if new == target
            else f"now says {class_names[new]} {after[new]:.0%} · {class_names[target]} {after[target]:.0%}")
    c_after.image(services.overlay_png(item.display, effect["heatmaps_after"][index], "jet", 0.5),
                  caption=f"after · {said}", width="stretch")
    c_bars.plotly_chart(topk_figure({"before": before, "after": after}, class_names, ["#64748b", "#c2410c"], k=4),
                        key=f"{key}_iv_bars_{index}")
    return new != target


@st.fragment
def intervention_panel(models: list[dict], pictures: list[dict], *, key: str) -> None:
    """Pick a model, an attention site and an intervention; see each picture's prediction and Grad-CAM
    before and after, side by side. A fragment: changing these widgets reruns only this panel."""
    import services

    st.subheader("Intervene: change the attention and watch the prediction")
    st.caption("Override one site's attention for one forward pass (`attnviz.analysis.interventions`): the shared model "
               "itself is never changed. Both heat maps explain the class predicted before the change.")
    if not models or not pictures:
        st.info("Pick a model and a picture first.")
        return
    by_id = {m["id"]: m for m in models}
    c_model, c_site, c_method, c_arg = st.columns([1.3, 1, 1.6, 1])
    model_id = c_model.selectbox("Model", list(by_id), format_func=lambda i: by_id[i]["name"], key=f"{key}_iv_model")
    model = by_id[model_id]
    try:
        sites = services.intervention_sites(model_id, model["weights_sha256"])
    except services.user_errors() as err:
        st.error(f"{model['name']}: {err}")
        return
    if not sites:
        st.info(f"{model['name']} has no attention readout that can be overridden.")
        return
    names = list(sites)
    site = c_site.selectbox("Site", names, index=len(names) // 2 if len(names) > 2 else 0, format_func=short_site,
                            key=f"{key}_iv_site")
    info = sites[site]
    labels = services.intervention_labels()
    method = c_method.selectbox("Intervention", info["methods"], format_func=lambda m: labels.get(m, m),
                                key=f"{key}_iv_method")
    k = branch = None
    if method == "channel_zero_topk":
        channels = int(info["channels"])
        k = c_arg.number_input("k channels", min_value=1, max_value=channels, value=min(4, channels), step=1,
                               key=f"{key}_iv_k", help=f"1 to {channels}: the channels this site weights most are zeroed")
    elif method in ("branch_off", "branch_only"):
        branch = c_arg.selectbox("Branch", list(range(int(info["branches"]))), format_func=lambda b: f"branch {b + 1}",
                                 key=f"{key}_iv_branch")
    digests = tuple(item.digest for item in pictures)
    try:
        effect = services.intervention_effect(model_id, model["weights_sha256"], digests, pictures, site, method,
                                              None if k is None else int(k), branch)
    except services.user_errors() as err:
        st.error(str(err))
        return
    class_names = effect["class_names"] or [str(i) for i in range(effect["probs_before"].shape[1])]
    changed = sum(_intervention_row(effect, index, item, class_names, key=key) for index, item in enumerate(pictures))
    st.caption(f"{effect['describe']} ({model['name']}): the prediction changed for {changed} of {len(pictures)} "
               "picture(s). Left: Grad-CAM of the unchanged model; middle: the same class's Grad-CAM with the "
               "intervention; right: the top classes before and after.")
