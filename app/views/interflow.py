"""Interflow: branch weights, each stage branch's own prediction, and how they combine."""

import numpy as np
import streamlit as st

import components as ui
import figures
import services

st.title("Interflow")
st.markdown("Interflow gives every stage of the backbone its own small classifier (pool → FC → class "
            "scores) and learns how much to trust each: **soft** learns one weight per branch, **per_class** "
            "one per branch and class, **hard** uses fixed weights. The final scores are the weighted sum.")

chosen = services.chosen_models()
zoo = services.zoo_by_id()
models = ui.pick_models(chosen, zoo, services.zoo_rows(), wanted=lambda r: r["interflow"] != "-",
                        fallback_specs=["resnet20-interflow-soft", "resnet20-interflow-per_class"], what="an Interflow head")
if not models:
    st.warning("The zoo has no Interflow model.")
    st.stop()
ui.untrained_warning(models)

item = ui.one_picture("interflow")
good = [item]
digests = (item.digest,)
show_maps = st.toggle("Also show each branch's Grad-CAM", value=True, key="interflow_maps")

for model in models:
    try:
        result = services.probe_images(model["id"], digests, good)
    except services.user_errors() as err:
        st.error(f"{model['name']}: {err}")
        continue
    head = next((v for v in result["sites"].values() if v["kind"] == "interflow"), None)
    if head is None:
        st.caption(f"{model['name']} has no Interflow head.")
        continue
    class_names = services.load_model(model["id"])[1].get("class_names") or [str(k) for k in range(model["num_classes"])]
    weights = np.asarray(head["branch_weights"])
    branch_logits = head["branch_logits"][0]  # [n, K]
    branch_probs = head["branch_probs"][0]
    final_probs = result["probs"][0]
    n = branch_logits.shape[0]
    mode = head.get("mode") or model["interflow"]

    st.header(f"{model['name']} · {mode}")
    left, right = st.columns([1, 3])
    left.image(item.thumbnail, caption=item.name, width="stretch")
    final_top = int(np.argmax(final_probs))
    left.metric("final prediction", class_names[final_top], f"{final_probs[final_top]:.0%}", delta_color="off")
    with right:
        if weights.ndim == 1:
            st.plotly_chart(figures.bar_figure([f"branch {i + 1} (stage {i + 1})" for i in range(n)], weights,
                                          colors="#15803d", y_title="branch weight w_b", y_range=None, height=260,
                                          text_format=".3f"), key=f"if_w_{model['id']}")
            st.caption("One learned (soft) or fixed (hard) weight per stage branch: a large weight means the "
                       "final answer leans on that stage; the paper expects deep stages to dominate.")
        else:
            st.plotly_chart(figures.branch_class_figure(weights, class_names, title="branch weight W[b, k]",
                                                   colorscale=figures.DIVERGING_SCALE,
                                                   zmin=-float(np.abs(weights).max()), zmax=float(np.abs(weights).max())),
                            key=f"if_w_{model['id']}")
            st.caption("per_class: one weight per branch and class. Read a column: which stage each class "
                       "relies on (blue positive, red negative, white near 0).")

    st.subheader("Each branch's own prediction")
    st.plotly_chart(figures.branch_class_figure(branch_probs, class_names, zmin=0, zmax=1, fmt=".0%",
                                           colorscale=figures.WEIGHT_SCALE), key=f"if_probs_{model['id']}")
    tops = [int(np.argmax(p)) for p in branch_probs]
    st.caption("Softmax of every branch's logits on its own: "
               + "; ".join(f"branch {b + 1} says **{class_names[t]}** ({branch_probs[b, t]:.0%})" for b, t in enumerate(tops))
               + ". Shallow branches see little context and are usually unsure.")

    st.subheader("How they combine")
    contrib = branch_logits * (weights[:, None] if weights.ndim == 1 else weights)
    top_classes = list(np.argsort(-final_probs)[:4])
    st.plotly_chart(figures.contributions_figure(contrib, class_names, top_classes), key=f"if_contrib_{model['id']}")
    st.caption("For the four classes the model finally ranks highest: each branch's weighted logit w_b·z_b,k "
               "stacked; the bar's end (marked) is the aggregated logit that the final softmax turns into "
               "probabilities. A branch pushing below zero votes against that class.")

    if show_maps:
        try:
            inspection = services.inspect(model["id"], item.digest, item, "gradcam", "predicted", None, branches=True)
        except services.user_errors() as err:
            st.error(f"{model['name']}: {err}")
            continue
        cols = st.columns(n + 1)
        for col, e in zip(cols, inspection.own_maps + inspection.branch_maps, strict=False):
            png = services.overlay_png(item.display, e.heatmap, "jet", 0.5)
            label = "final output" if e.branch is None else f"branch {e.branch + 1} ({e.layer})"
            col.image(png, caption=f"{label} · {class_names[e.target]}", width="stretch")
        st.caption("Grad-CAM of the final output (left) and of each branch's own score for the same class at "
                   "its own stage: shallow branches look at fine texture, deep ones at whole objects.")

ui.intervention_panel(models, good, key="interflow")  # switch a branch off, or keep one alone
