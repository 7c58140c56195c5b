"""Channel attention (SE): per-block channel weights for a picture, ReLU vs FeLU, class profiles, dead units."""

import numpy as np
import streamlit as st

import components as ui
import figures
import services

st.title("Channel attention (SE)")
st.markdown("An SE block squeezes each channel to its mean and learns one weight per channel in [0, 1] "
            "(eq. 2 of the SE paper). Here: those weights for your picture in every block, SE with ReLU "
            "beside SE with FeLU, two pictures against each other, what each class excites on average, "
            "and how many excitation units are dead.")

chosen = services.chosen_models()
zoo = services.zoo_by_id()
se_models = [zoo[i] for i in chosen if zoo[i]["attention"] in ("se", "eca", "cbam")]
if not se_models:
    rows = services.zoo_rows()
    named = [r for r in rows if {r["spec"], r["name"]} & {"resnet20-se", "resnet20-se-felu"}]  # zoo name or spec
    fallback = [r for r in named if r["trained"]] or named
    se_models = fallback[:2]
    st.info("None of the chosen models has channel attention, so this page shows "
            + " and ".join(f"**{m['name']}**" for m in se_models) + ". Choose SE, SE-FeLU, ECA or CBAM models "
            "in the sidebar to see others.", icon=":material/info:")
if not se_models:
    st.warning("The zoo has no model with channel attention.")
    st.stop()
if any(not m["trained"] for m in se_models):
    st.warning("Some models here are untrained: their channel weights come from random weights and carry no "
               "meaning beyond showing the mechanics.", icon=":material/warning:")

sources = ui.image_inputs(services.gallery(), key="se", default_gallery=2, max_images=2)
good = services.usable_pictures(sources, limit=2)
if not good:
    st.info("Pick one picture (or two, to compare them).")
    st.stop()
digests = tuple(item.digest for item in good)
picture_cols = st.columns(4)
for col, item in zip(picture_cols, good, strict=False):
    col.image(item.thumbnail, caption=item.name, width="stretch")

probes = {}
for m in se_models:
    try:
        probes[m["id"]] = services.probe_images(m["id"], digests, good)
    except services.user_errors() as err:
        st.error(f"{m['name']}: {err}")


def weights_of(model_id: str, index: int) -> dict[str, np.ndarray]:
    sites = probes[model_id]["sites"]
    return {s: v["channel_weights"][index] for s, v in sites.items() if v.get("channel_weights") is not None}


# ------------------------------------------------------------------------------- block x channel maps
st.subheader(f"Every block's channel weights for {good[0].name}")
cols = st.columns(len(probes))
for col, model_id in zip(cols, probes, strict=True):
    with col:
        m = zoo[model_id]
        st.markdown(f"**{m['name']}** · {m['activation'] if m['attention'] == 'se' else m['attention']}")
        st.plotly_chart(figures.block_channel_figure(weights_of(model_id, 0)), key=f"se_grid_{model_id}")
st.caption("Rows are blocks from input (top) to output (bottom), colour is the weight on one fixed [0, 1] "
           "scale for every model. Look for blocks where weights spread out (the block selects channels) "
           "versus rows of uniform colour (the block passes everything through alike).")

# ----------------------------------------------------------------------------------- one block, bars
any_sites = list(weights_of(next(iter(probes)), 0)) if probes else []
if any_sites:
    site = st.select_slider("Block", options=any_sites, value=any_sites[len(any_sites) // 2],
                            format_func=figures.short_site, key="se_block")
    cols = st.columns(len(probes))
    for col, model_id in zip(cols, probes, strict=True):
        series = {}
        for index, item in enumerate(good):
            w = weights_of(model_id, index)
            if site in w:
                series[item.name] = w[site]
        with col:
            if series:
                st.plotly_chart(figures.channel_bars_figure(series, ["#c2410c", "#1d4ed8"][: len(series)]),
                                key=f"se_bars_{model_id}")
            else:
                st.caption(f"{zoo[model_id]['name']} has no site named {site}.")
    st.caption(f"Channel weights of block {figures.short_site(site)}"
               + (" for both pictures: bars that differ are the channels this block uses to tell them apart."
                  if len(good) == 2 else ": add a second picture to compare."))

# ------------------------------------------------------------------------------------- two pictures
if len(good) == 2 and probes:
    st.subheader(f"{good[0].name} vs {good[1].name}")
    lines = {}
    for model_id in probes:
        a, b = weights_of(model_id, 0), weights_of(model_id, 1)
        lines[zoo[model_id]["name"]] = {figures.short_site(s): float(np.mean(np.abs(a[s] - b[s]))) for s in a}
    st.plotly_chart(figures.lines_figure(lines, x_title="block", y_title="mean |difference| of weights"), key="se_diff")
    st.caption("How differently each block weighs the two pictures' channels. The SE paper finds early "
               "blocks class-agnostic and late blocks class-specific: expect the curve to rise with depth.")

# --------------------------------------------------------------------------------- class profiles
st.subheader("Class-wise average excitation over the sample set")
with st.spinner("Averaging channel weights over the 500 sample test images (once per model)..."):
    profiles = {}
    for model_id in probes:
        try:
            profiles[model_id] = services.excitation_profiles(model_id, zoo[model_id]["weights_sha256"])
        except services.user_errors() as err:
            st.caption(f"{zoo[model_id]['name']}: {err}.")
for model_id, prof in profiles.items():
    sites = prof["sites"]
    if not sites:
        continue
    picks = {"early": sites[0], "middle": sites[len(sites) // 2], "late": sites[-1]}
    st.markdown(f"**{zoo[model_id]['name']}**")
    cols = st.columns(3)
    for col, (stage, s) in zip(cols, picks.items(), strict=True):
        col.plotly_chart(figures.profiles_figure(prof["mean"][s], prof["class_names"],
                                            title=f"{stage}: {figures.short_site(s)} · specialisation {prof['specialisation'][s]:.2f}"),
                         key=f"se_prof_{model_id}_{stage}")
if profiles:
    st.caption("Each line is one class's mean weight per channel (SE paper, fig. 6). Lines that lie on top of "
               "each other = the block treats every class alike; lines that separate = class-specific "
               "channels. Specialisation = mean distance between class profiles / spread within a class.")
    spec_rows = {zoo[mid]["name"]: {figures.short_site(s): v for s, v in p["specialisation"].items()}
                 for mid, p in profiles.items()}
    st.plotly_chart(figures.lines_figure(spec_rows, x_title="block", y_title="specialisation"), key="se_specialisation")
    st.caption("Specialisation per block for every model: the SE paper's claim is that it grows with depth.")

# ------------------------------------------------------------------------------------------- dead units
st.subheader("Dead excitation units: ReLU vs FeLU")
dead = {}
for model_id in probes:
    if zoo[model_id]["attention"] != "se":
        continue
    try:
        dead[model_id] = services.dead_units(model_id, zoo[model_id]["weights_sha256"])
    except services.user_errors() as err:
        st.caption(f"{zoo[model_id]['name']}: {err}.")
if dead:
    cols = st.columns(len(dead))
    for col, (model_id, d) in zip(cols, dead.items(), strict=True):
        per_site = d["per_site"]
        with col:
            st.metric(f"{zoo[model_id]['name']} ({zoo[model_id]['activation']})", f"{100 * d['fraction']:.1f}% dead",
                      help=f"{sum(x for x, _ in per_site.values())} of {sum(t for _, t in per_site.values())} hidden units")
            st.plotly_chart(figures.bar_figure([figures.short_site(s) for s in per_site], [x for x, _ in per_site.values()],
                                          colors="#7e22ce", y_title="dead units", height=240, text_format="d"),
                            key=f"se_dead_{model_id}")
    st.caption(f"A hidden unit counts as dead when its pre-activation is ≤ 0 for all {next(iter(dead.values()))['n_images']} "
               "probe images. With ReLU it then outputs 0 and gets no gradient; FeLU still passes a small "
               "negative value and a gradient (the FeLU paper's §2.1).")
else:
    st.caption("Dead units are counted for SE models only (ECA and CBAM have no hidden excitation layer here).")

# ------------------------------------------------------------------------------------------ interventions
ui.intervention_panel(se_models, good, key="se")
