"""Sanity checks: do a model's maps change when its weights are randomised? (Adebayo et al. 2018)"""

import numpy as np
import streamlit as st

import components as ui
import figures
import services

st.title("Sanity checks")
st.markdown("If a heat map barely changes when the network's weights are replaced by random ones, it shows the "
            "picture, not what the model learned (Adebayo et al., *Sanity Checks for Saliency Maps*, 2018). Here "
            "a private copy of the model is re-initialised from the logits down, one stage at a time, and every "
            "map is recomputed for the same picture and class.")

chosen = services.chosen_models()
zoo = services.zoo_by_id()
models = [zoo[i] for i in chosen] or [r for r in services.zoo_rows() if r["trained"]][:1]
if not models:
    st.warning("The zoo has no model to check.")
    st.stop()
ui.untrained_warning(models)

c_model, c_method, c_mode = st.columns([1.4, 1.2, 1])
model_id = c_model.selectbox("Model", [m["id"] for m in models], format_func=lambda i: zoo[i]["name"],
                             key="sanity_model")
methods = list(services.SANITY_METHODS)
method = c_method.selectbox("Method for the strip", methods, format_func=lambda m: ui.METHOD_LABELS.get(m, m),
                            key="sanity_method")
mode = c_mode.radio("Randomise", ["cascading", "independent"], key="sanity_mode", horizontal=True,
                    help="cascading: from the logits down, keeping what was randomised before; independent: one "
                         "stage at a time, the rest trained")

item = ui.one_picture("sanity")
model = zoo[model_id]
with st.spinner("Re-initialising a copy of the model step by step and recomputing every map..."):
    try:
        result = services.sanity_check(model_id, model["weights_sha256"], item.digest, item, tuple(methods), mode)
    except services.user_errors() as err:
        st.error(f"{model['name']}: {err}")
        st.stop()

class_names = services.load_model(model_id)[1].get("class_names") or [str(k) for k in range(model["num_classes"])]
st.markdown(f"**Reading.** {result['reading']}")

st.subheader(f"{ui.METHOD_LABELS.get(method, method)} from trained to random")
labels = result["labels"]
cols = st.columns(len(labels) + 1)
cols[0].image(item.thumbnail, caption=item.name, width="stretch")
for col, label, heat, predicted in zip(cols[1:], labels, result["heatmaps"][method], result["predictions"], strict=True):
    where = "trained" if label == "trained" else (f"random down to {label}" if mode == "cascading" else f"only {label} random")
    col.image(services.overlay_png(item.display, heat, "jet", 0.5),
              caption=f"{where} · says {class_names[predicted]}", width="stretch")
st.caption(f"Every map explains the class the trained model predicts (**{class_names[result['target']]}**). A map that "
           "keeps its look while the weights become random does not depend on what the model learned.")

st.subheader("Similarity to the trained model's map, per method")
metric = st.radio("Measure", ["spearman_abs", "spearman", "ssim"], horizontal=True, key="sanity_metric",
                  format_func={"spearman_abs": "rank correlation of |map|", "spearman": "rank correlation of the map",
                               "ssim": "SSIM of the heat maps"}.get)
curves = {ui.METHOD_LABELS.get(m, m) + f" · {result['verdicts'][m]}": dict(zip(labels, c[metric], strict=True))
          for m, c in result["curves"].items()}
st.plotly_chart(figures.lines_figure(curves, x_title="randomised down to" if mode == "cascading" else "randomised alone",
                                y_title=metric), key="sanity_curves")
st.caption("1.0 = the same map as the trained model's. Methods whose curve falls towards 0 pass the check; "
           "a curve that stays high means the map survives random weights (Adebayo et al. found this for Guided "
           "Backprop).")

if result["readouts"]:
    st.subheader("The attention modules' own readouts")
    readouts = {key: dict(zip(labels, values, strict=True)) for key, values in result["readouts"].items()
                if not all(np.isnan(v) for v in values)}
    st.plotly_chart(figures.lines_figure(readouts, x_title="randomised down to" if mode == "cascading" else "randomised alone",
                                    y_title="rank correlation with trained"), key="sanity_readouts")
    st.caption("Channel weights, spatial masks and Interflow branch weights of every site, compared with the trained "
               "model's for this picture: a site keeps 1.0 until its own stage (or one before it) is randomised.")
