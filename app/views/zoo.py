"""Zoo: every model (shipped, your runs, untrained architectures) in one table; pick what to compare."""

from functools import partial

import streamlit as st

import components as ui
import figures
import services

st.title("Model zoo")
st.markdown("Every model this installation can show. Tick rows to compare them: the choice holds on every "
            "page and is kept in the page address, so a view can be shared by copying the URL.")

chosen = services.chosen_models()
with st.spinner("Counting parameters and FLOPs and timing each model on the CPU (once; cached afterwards)..."):
    rows = services.zoo_rows_with_costs()

trained = [r for r in rows if r["trained"]]
if not any(r["shipped"] for r in rows):
    st.warning(
        "No trained weights are shipped with this installation yet. The table lists the zoo's "
        "architectures as **untrained** models (random weights): their predictions and maps are noise "
        "and are labelled so everywhere. Train one on the **Train** page and it appears here.",
        icon=":material/info:",
    )

show_untrained = st.toggle("Show untrained architectures", value=not trained, key="zoo_untrained",
                           help="Architectures of the zoo without a trained checkpoint (random weights).")
table_rows = [r for r in rows if show_untrained or r["trained"] or r["id"] in chosen]
ids = [r["id"] for r in table_rows]
# A new key whenever the choice changes elsewhere (sidebar, URL) so the table's ticks follow it.
table_key = "zoo_table_" + ui.short_hash([chosen, ids])


def _select_from_table(key: str, row_ids: list[str]) -> None:
    selection = st.session_state[key].selection.rows
    st.session_state["models"] = [row_ids[i] for i in selection][:8]


st.dataframe(
    ui.zoo_table(table_rows),
    key=table_key, on_select=partial(_select_from_table, table_key, ids), selection_mode="multi-row", hide_index=True,
    selection_default={"selection": {"rows": [i for i, row_id in enumerate(ids) if row_id in chosen]}},
    column_config=ui.ZOO_COLUMNS, height="content",  # every row in view: the default stops at ten
)
report = services.device_report()
st.caption("Test accuracy is what the trainer measured on the dataset's test split (in the model card). "
           f"CPU ms: {report['latency_method']}, measured {report['latency_measured_at'] or 'at server start'} "
           "on this machine before any page ran (the sidebar's ResNet-20 figure is the same measurement). "
           "Look at what each module costs (params, FLOPs, ms) against what it buys (accuracy).")

st.subheader("Your pictures through the zoo")
st.caption("What every trained model of the zoo says about your pictures (upload them here or on any page; "
           "the gallery's CIFAR-10 test pictures stand in until you do).")
pictures = services.usable_pictures(ui.image_inputs(services.gallery(), key="zoo", max_images=6), limit=6)
if pictures:
    digests = tuple(p.digest for p in pictures)
    probs, class_names = {}, {}
    for r in trained:
        try:
            probs[r["id"]] = services.probe_images(r["id"], digests, pictures)["probs"]
            class_names[r["id"]] = services.load_model(r["id"])[1].get("class_names") or []
        except services.user_errors() as err:
            st.warning(f"{r['name']}: {err}")
    for column, picture in zip(st.columns(max(len(pictures), 6)), pictures, strict=False):
        column.image(picture.thumbnail, caption=picture.name, width="stretch")
    st.dataframe(ui.prediction_rows(pictures, trained, probs, class_names), hide_index=True,
                 column_config={"test acc %": st.column_config.NumberColumn("test acc %", format="%.2f")},
                 key="zoo_predictions", height="content")
    st.caption("Top class and its probability, one row per trained model, one column per picture. The models "
               "learned CIFAR-10's ten classes on 32×32 "
               "pictures: anything else (a face, a cup) still gets one of those ten names.")

if not chosen:
    st.info("Tick one or more rows to compare them here and on the other pages.")
    st.stop()

picked = [r for r in rows if r["id"] in chosen]
st.subheader("The chosen models")
for r in picked:
    note = services.zoo_note(r["path"], r["weights_sha256"])
    if note:
        st.info(f"**{r['name']}** (`{r['spec']}`): {note}", icon=":material/tune:")
left, right = st.columns(2)
with left:
    scored = [r for r in picked if r["test_acc"] is not None]
    if scored:
        st.plotly_chart(figures.bar_figure([r["name"] for r in scored], [100 * r["test_acc"] for r in scored],
                                      colors=[figures.model_color(chosen.index(r["id"])) for r in scored],
                                      y_title="test accuracy %", text_format=".2f", y_range=(0, 100)),
                        key="zoo_acc")
        st.caption("Test accuracy of each chosen model on its own dataset's test split: only models "
                   "trained on the same data with the same recipe compare fairly.")
    else:
        st.info("None of the chosen models is trained, so there is no accuracy to compare.")
with right:
    st.plotly_chart(figures.cost_figure(picked, [figures.model_color(chosen.index(r["id"])) for r in picked]),
                    key="zoo_cost")
    st.caption("What each chosen model costs: parameters and CPU time per picture. An attention module "
               "should add little of either over the plain backbone.")
