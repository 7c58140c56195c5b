"""LGAM: every site's spatial map over the picture, which gates still learn over the sample set, per-group
channel weights, the ladder in numbers."""

import numpy as np
import streamlit as st

import components as ui
import figures
import services
from attnviz.layers.lgam import spatial_map_state

st.title("LGAM: lightweight group-wise attention")
st.markdown("LGAM splits a block's channels into G groups, weights each group's channels (with a residual, "
            "eq. 3), passes every group's result on to the next group (the *ladder*, eq. 4), then reweights "
            "all positions with one spatial map built from the channel sum (eqs. 5-6) and adds the input back "
            "(eq. 7).")

chosen = services.chosen_models()
zoo = services.zoo_by_id()
models = ui.pick_models(chosen, zoo, services.zoo_rows(), wanted=lambda r: r["attention"] == "lgam",
                        fallback_specs=["resnet20-lgam"], what="LGAM")
if not models:
    st.warning("The zoo has no LGAM model.")
    st.stop()
ui.untrained_warning(models)

item = ui.one_picture("lgam")
good = [item]
digests = (item.digest,)


@st.fragment
def spatial_maps(model: dict, sites: dict) -> None:
    c1, c2 = st.columns(2)
    colormap = c1.selectbox("Colour map", services.colormaps(), key=f"lgam_cmap_{model['id']}",
                            index=services.colormaps().index("inferno") if "inferno" in services.colormaps() else 0)
    opacity = c2.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key=f"lgam_opacity_{model['id']}")
    names = list(sites)
    per_row = 5
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row)
        for col, site in zip(cols, names[start:start + per_row], strict=False):
            spatial = sites[site]["spatial"][0, 0]
            png = services.overlay_png(item.display, spatial, colormap, opacity, vmin=0.5, vmax=1.0)
            col.image(png, caption=f"{figures.short_site(site)} · {spatial.shape[0]}×{spatial.shape[1]} · "
                                   f"{spatial.min():.2f}–{spatial.max():.2f}", width="stretch")
    states = {site: spatial_map_state(sites[site]["spatial"][0, 0]) for site in names}
    flat = [site for site in names if states[site] != "varies"]
    counts = {state: sum(1 for v in states.values() if v == state) for state in ("off", "saturated", "flat")}
    pooled = services.lgam_spatial_reduce(model["id"])  # "sum" (the paper's eq. (5)) or "mean"
    st.caption("M_spat of every LGAM site from the first block (top left) to the last, upsampled from its own "
               "resolution. Scale fixed to [0.5, 1] for every site and model: the ReLU inside σ(δ(·)) of eq. (6) "
               "keeps the map at 0.5 or above, so 0.5 (dark) means 'not boosted', bright means 'boosted'."
               + ((f" {len(flat)} of {len(names)} sites are flat for this picture (one value everywhere)"
                  + (f"; {counts['off']} of them at exactly 0.5: there eq. (5)'s channel {pooled} is negative at every "
                     "position, the ReLU turns it into 0 and the site boosts nothing" if counts["off"] else "")
                  + (f"; {counts['saturated']} at 1.0: the {pooled} is so large everywhere that the sigmoid "
                     "saturates" if counts["saturated"] else "")
                  + (f"; {counts['flat']} at another single value" if counts["flat"] else "") + ".") if flat else "")
               + (" Eq. (5) builds the map from the *sum* over all channels, which drives the sigmoid to its bounds "
                  "(the modules study, reports/modules, compares a channel mean)." if pooled == "sum" else
                  " This model pools eq. (5) with a channel *mean* instead of the paper's sum (see 'Which LGAM this is' above), "
                  "which keeps the sigmoid further from its bounds."))


def gate_usage_table(model: dict) -> None:
    try:
        usage = services.lgam_gate_usage(model["id"], model["weights_sha256"])
    except services.user_errors() as err:
        st.caption(f"{model['name']}: {err}.")
        return
    st.dataframe([{"site": figures.short_site(site), "map off": u.spatial_states["off"],
                   "map saturated": u.spatial_states["saturated"], "map flat": u.spatial_states["flat"],
                   "map varies": u.spatial_states["varies"], "live positions": f"{u.live_positions:.0%}",
                   "dead channel gates": f"{u.dead_channel_gates} of {u.channel_gates}"}
                  for site, u in usage.per_site.items()], hide_index=True)
    st.caption(f"Over {usage.pictures} sample test pictures (10 classes alike): {len(usage.frozen_sites)} of "
               f"{len(usage.per_site)} sites have a spatial map that is off (0.5) or saturated (1.0) for every "
               f"picture, and {usage.dead_channel_gates} of {usage.channel_gates} channel "
               "gates are dead (0.5 for every picture). Both gates are σ(δ(z)): where z ≤ 0 the ReLU passes no "
               "gradient, and where the sigmoid saturates almost none, so training cannot shape these gates any more. "
               "'Live positions' is the share of positions, over all pictures, where the spatial map lies strictly "
               "between 0.5 and 1 and a gradient can flow through it.")


for model in models:
    try:
        result = services.probe_images(model["id"], digests, good)
    except services.user_errors() as err:
        st.error(f"{model['name']}: {err}")
        continue
    sites = {s: v for s, v in result["sites"].items() if v["kind"] == "lgam"}
    if not sites:
        st.caption(f"{model['name']} has no LGAM site.")
        continue
    class_names = services.load_model(model["id"])[1].get("class_names") or []
    probs = result["probs"][0]
    top = int(np.argmax(probs))
    st.header(model["name"])
    note = services.zoo_note(model["path"], model["weights_sha256"])
    if note:
        st.caption(f"Which LGAM this is: {note}")
    picture, prediction = st.columns([1, 4], vertical_alignment="center")
    picture.image(item.thumbnail, caption=item.name, width="stretch")
    prediction.markdown(f"Prediction for **{item.name}**: **{class_names[top] if top < len(class_names) else top}** "
                f"({probs[top]:.0%}).")

    st.subheader("Spatial map of every site")
    spatial_maps(model, sites)
    st.subheader("Across the sample set: which gates can still learn")
    gate_usage_table(model)

    st.subheader("Per-group channel weights")
    names = list(sites)
    site = st.select_slider("Site", options=names, value=names[len(names) // 2], format_func=figures.short_site,
                            key=f"lgam_site_{model['id']}")
    record = sites[site]
    weights = record["group_channel_weights"][0]
    groups = int(record.get("groups") or 1)
    per_group = len(weights) // groups
    group_colors = [figures.CLASS_COLORS[g % len(figures.CLASS_COLORS)] for g in range(groups) for _ in range(per_group)]
    st.plotly_chart(figures.bar_figure([str(c) for c in range(len(weights))], weights, colors=group_colors,
                                  x_title="channel (colour = group)", y_title="M_chan", y_range=(0, 1), height=280,
                                  text_format=".2f"), key=f"lgam_groups_{model['id']}")
    st.caption(f"M_chan of each of the {groups} groups of {per_group} channels at {figures.short_site(site)}: every group "
               "has its own small MLP (eq. 2), so look for groups that keep their channels (near 1) versus groups "
               "that damp them.")

    st.subheader("The ladder, with this picture's numbers")
    group_means = [float(np.mean(weights[g * per_group:(g + 1) * per_group])) for g in range(groups)]
    spatial = record["spatial"][0, 0]
    a = float(record["input_norm"][0]) if record.get("input_norm") is not None else float("nan")
    a1 = float(record["a_prime_norm"][0])
    a2 = float(record["a_double_prime_norm"][0])
    st.markdown(
        f"At **{figures.short_site(site)}** the input A (‖A‖ = {a:.1f}) is cut into {groups} groups. Group 1 gets "
        f"channel weights averaging **{group_means[0]:.2f}**; its output y₁ = x₁ + M_chan·x₁ is added to group 2's "
        f"input before group 2 is weighted (mean {group_means[1] if groups > 1 else float('nan'):.2f}), and so on "
        f"down the ladder (group means: {', '.join(f'{g:.2f}' for g in group_means)}). Concatenated, the groups "
        f"give A' with ‖A'‖ = **{a1:.1f}** ({a1 / a:.2f}× the input: the residual in eq. 3 and the ladder add up). "
        f"The spatial map over A' ranges from **{spatial.min():.2f}** to **{spatial.max():.2f}** (mean "
        f"{spatial.mean():.2f}); the output A'' = A'·M_spat + A has ‖A''‖ = **{a2:.1f}**."
    )
    st.caption("Norms are L2 norms of the whole feature map for this one picture (recorded by attnviz's probe).")

ui.intervention_panel(models, good, key="lgam")  # switch a site's spatial mask off and watch the prediction
