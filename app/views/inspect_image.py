"""Inspect an image: predictions and heat maps of every chosen model side by side, with faithfulness."""

import streamlit as st

import components as ui
import figures
import services
from profiling import phase

st.title("Inspect an image")
st.markdown("Pick pictures, then compare what each chosen model predicts and *where* it looks: one row per "
            "picture, one column per model. Deletion/insertion scores under each map say how faithful it is.")

chosen = services.chosen_models()
zoo = services.zoo_by_id()
if not chosen:
    st.info("Choose at least one model in the sidebar (or tick rows on the Zoo page).")
    st.stop()
models = [zoo[i] for i in chosen]
colors = [figures.model_color(i) for i in range(len(models))]

with phase("picture inputs"):
    sources = ui.image_inputs(services.gallery(), key="inspect")  # (name, bytes): decoded in services.compare
if not sources:
    st.info("Pick a gallery image, upload one, or take a picture to begin.")
    st.stop()

# ---------------------------------------------------------------------------------------- controls
first_card = services.load_model(models[0]["id"])[1]
class_names = list(first_card.get("class_names") or [str(i) for i in range(models[0]["num_classes"])])
methods = services.explain_methods()
c_method, c_target, c_layer, c_opts = st.columns([1.2, 1.2, 1, 1.2])
method = c_method.selectbox("Method", methods, format_func=lambda m: ui.METHOD_LABELS.get(m, m), key="inspect_method")
target_options = ["predicted", "top3", *[f"class:{i}" for i in range(len(class_names))]]
target_choice = c_target.selectbox(
    "Target class", target_options, key="inspect_target",
    format_func=lambda t: {"predicted": "the predicted class", "top3": "each of the top 3"}.get(
        t, class_names[int(t.split(":")[1])] if t.startswith("class:") else t),
)
target = {"predicted": "predicted", "top3": ("topk", 3)}.get(target_choice)
if target is None:
    target = int(target_choice.split(":")[1])
stage_count = min(len(services.model_layers(m["id"])["stages"]) for m in models)
layer_choice = c_layer.selectbox(
    "Layer", list(range(stage_count, 0, -1)), key="inspect_layer",
    format_func=lambda k: f"stage {k} output" + (" (default)" if k == stage_count else ""),
    help="CAM methods look at this stage's output; attribution methods work on the input pixels.",
)
with c_opts:
    show_scores = st.toggle("Deletion / insertion scores", value=True, key="inspect_scores")
    show_masks = st.toggle("Modules' own spatial masks", value=False, key="inspect_masks",
                           help="LGAM, CBAM, BAM and SGE compute a spatial mask of their own.")


def model_cell(col, item, row: int, m: dict, cell) -> list[dict]:
    """One model's drawn maps for one picture (and its module mask), in ``col``; returns them for the report."""
    figures = []
    inspection = cell.inspection
    for j, (e, png) in enumerate(zip(inspection.own_maps, cell.map_pngs, strict=True)):
        label = class_names[e.target] if e.target < len(class_names) else str(e.target)
        text = f"{label} · p={e.target_prob:.2f}"
        if inspection.scores is not None:
            score = inspection.scores[j]
            text += f" · deletion {score.deletion:.3f} · insertion {score.insertion:.3f}"
        col.image(png, caption=text, width=ui.GRID_IMAGE_WIDTH)
        col.download_button("PNG", png, file_name=f"{item.name}-{m['name']}-{method}-{label}.png",
                            mime="image/png", key=f"dl_{row}_{m['id']}_{j}", icon=":material/download:",
                            on_click="ignore")
        figures.append({"png": png, "row": item.name, "column": m["name"], "caption": text})
    if show_masks:
        if cell.mask is None:
            col.caption("no spatial mask: this model's modules are channel-only")
            return figures
        reading = cell.mask
        text = f"mask {reading.site} · deletion {reading.deletion:.3f} · insertion {reading.insertion:.3f}"
        col.image(cell.mask_png, caption=text, width=ui.GRID_IMAGE_WIDTH)
        figures.append({"png": cell.mask_png, "row": item.name, "column": f"{m['name']} mask {reading.site}",
                        "caption": text})
    return figures


@st.fragment
def results() -> None:
    """Everything computed from the pictures: the one call to `services.compare` (cached per model and
    picture) and its drawing. Display settings rerun only this part, and run no model."""
    messages = st.container()
    st.subheader("Predictions")
    predictions = st.container()
    st.caption("Top-5 classes of each model for each picture: look for models that agree, and for how sure "
               "they are. Untrained models spread their probability almost evenly.")
    st.subheader("Where each model looks")
    d1, d2, d3 = st.columns([1, 1, 2])
    colormap = d1.selectbox("Colour map", services.colormaps(), key="inspect_cmap",
                            index=services.colormaps().index("jet") if "jet" in services.colormaps() else 0)
    opacity = d2.slider("Heat map opacity", 0.0, 1.0, 0.5, 0.05, key="inspect_opacity")
    mask_site = d3.radio("Module mask shown", ["deepest site", "shallowest site"], horizontal=True,
                         key="inspect_mask_site", disabled=not show_masks)
    with st.spinner(f"Running {ui.METHOD_LABELS.get(method, method)} on {len(sources)} picture(s) x "
                    f"{len(models)} model(s)..."):
        comparison = services.compare(chosen, sources, method=method, target=target, stage=layer_choice,
                                      scores=show_scores, masks=show_masks, colormap=colormap, opacity=opacity,
                                      mask_site=mask_site.split()[0])
    for model_id, message in comparison.errors.items():
        messages.error(f"{zoo[model_id]['name']}: {message}")
    draw_predictions(predictions, comparison)
    drawn = draw_grid(comparison)
    if drawn:
        report_html = services.comparison_report(
            [m["id"] for m in models if m["id"] in comparison.cells], method=method, target=target_choice,
            target_label=ui.target_label(target_choice, class_names), layer=f"stage {layer_choice}",
            colormap=colormap, opacity=opacity, figures=drawn,
            score_rows=ui.score_rows(models, comparison.inspections(), comparison.usable, class_names))
        st.download_button("Download the whole comparison (HTML report)", report_html,  # rendered on click
                           file_name="attnviz-comparison.html", mime="text/html", key="inspect_report",
                           icon=":material/description:", on_click="ignore")
    if show_scores:
        draw_curves(comparison)


def draw_predictions(box, comparison) -> None:
    """Each usable picture's top-5 classes under every model that answered, in ``box``."""
    cells = comparison.cells
    for index, item in enumerate(comparison.usable):
        probs = {zoo[mid]["name"]: per_picture[index].inspection.probs for mid, per_picture in cells.items()}
        if not probs:
            break
        left, right = box.columns([1, 5], vertical_alignment="center")
        left.image(item.thumbnail, caption=item.name, width=120)
        with phase("predictions figure"):
            right.markdown(figures.topk_html(probs, class_names, [colors[chosen.index(mid)] for mid in cells]),
                           unsafe_allow_html=True)


def draw_grid(comparison) -> list[dict]:
    """One row per picture (a sentence for an unusable one), one column per model; returns the drawn maps."""
    drawn, cells = [], comparison.cells
    header = st.columns([1] + [2] * max(len(models), 3))
    header[0].markdown("**picture**")
    for col, m in zip(header[1:], models, strict=False):
        tag = " *(untrained)*" if not m["trained"] else ""
        col.markdown(f"<span style='color:{colors[chosen.index(m['id'])]}'>■</span> **{m['name']}**{tag}",
                     unsafe_allow_html=True)
    usable_index = {id(item): i for i, item in enumerate(comparison.usable)}
    for row, item in enumerate(comparison.pictures):
        columns = st.columns([1] + [2] * max(len(models), 3))
        if item.error is not None:
            columns[0].markdown(f"**{item.name}**")
            columns[1].warning(f"{item.name} could not be used: {item.error}.", icon=":material/broken_image:")
            continue
        columns[0].image(item.thumbnail, caption=item.name, width="stretch")  # never wider than its column
        for note in item.notes:
            columns[0].caption(note)
        for col, m in zip(columns[1:], models, strict=False):
            if m["id"] not in cells:
                col.caption("no result (see the message above)")
                continue
            drawn += model_cell(col, item, row, m, cells[m["id"]][usable_index[id(item)]])
    st.caption("Heat maps are scaled to [0, 1] per map with one colour scale for every model; module masks "
               "are shown on their own [0, 1] values. Deletion (lower is better) and insertion (higher is "
               "better) measure how fast the class probability falls or rises when the hottest pixels go or come.")
    return drawn


def draw_curves(comparison) -> None:
    """The first usable picture's deletion and insertion curves, every model in its colour."""
    cells, usable = comparison.cells, comparison.usable
    if not (cells and usable):
        return
    st.subheader(f"Deletion and insertion curves ({usable[0].name})")
    first = {zoo[mid]["name"]: per_picture[0].inspection.scores[0] for mid, per_picture in cells.items()}
    with phase("curves figure"):
        curves = figures.curves_png({n: s.deletion_curve for n, s in first.items()},
                                    {n: s.insertion_curve for n, s in first.items()},
                                    [colors[chosen.index(mid)] for mid in cells])
    st.image(curves, width="stretch")
    st.caption("Deletion: the hottest pixels are removed first; a faithful map makes the curve drop fast. "
               "Insertion: the hottest pixels are restored first on a blurred picture; faithful maps rise fast. "
               "The areas under the curves are the scores under the maps.")


with phase("results"):
    results()
