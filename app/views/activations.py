"""Activations: ReLU vs FeLU (and the activations the FeLU paper compares) with their derivatives."""

import numpy as np
import streamlit as st

import components as ui
import figures
import services

st.title("Activations")
st.markdown(
    "The FeLU paper (He & Sun, 2020) replaces the ReLU inside the SE block's excitation with **FeLU**, "
    "formula (4): identical to ReLU for positive inputs, slightly negative (never flat) for negative "
    "ones, so an excitation unit that goes negative still receives a gradient instead of dying."
)

registry = services.activation_registry()
names = list(registry)
left, right = st.columns([3, 2])
with left:
    chosen = st.multiselect(
        "Activations", names, default=["relu", "felu"], format_func=lambda n: registry[n]["label"],
        key="act_names", help="The first six are the ones compared in tables 1-2 of the FeLU paper.",
    )
with right:
    lo, hi = st.slider("Input range x", min_value=-10.0, max_value=10.0, value=(-5.0, 5.0), step=0.5,
                       key="act_range")

if not chosen:
    st.info("Pick at least one activation to draw.")
    st.stop()
if hi - lo < 0.5:
    st.info("Widen the range a little: the two ends are too close to draw a curve.")
    st.stop()

curves = {name: services.activation_curves(name, lo, hi) for name in chosen}
labels = {name: registry[name]["label"] for name in chosen}
x_min, y_min = services.felu_minimum()
marker = None
if "felu" in chosen and lo <= x_min <= hi:
    marker = (x_min, y_min, f"FeLU minimum ({x_min:.3f}, {y_min:.3f})")

col_f, col_d = st.columns(2)
with col_f:
    st.subheader("f(x)")
    st.plotly_chart(figures.activation_figure({n: (c[0], c[1]) for n, c in curves.items()}, labels,
                                         y_title="f(x)", marker=marker), key="act_f")
    st.caption("Look left of zero: ReLU is flat at 0, FeLU dips slightly below 0 and comes back.")
with col_d:
    st.subheader("f'(x)")
    st.plotly_chart(figures.activation_figure({n: (c[0], c[2]) for n, c in curves.items()}, labels,
                                         y_title="f'(x)"), key="act_df")
    st.caption("The gradient: where a curve sits on 0 a unit stops learning (ReLU for every x < 0).")

st.subheader("Where the gradient vanishes")
rows = []
for name, (_x, y, dy) in curves.items():
    rows.append({
        "activation": labels[name],
        "share of the range with f'(x) = 0": float(np.mean(np.abs(dy) < 1e-12)),
        "smallest f(x)": float(np.min(y)),
        "mean f(x) over the range": float(np.mean(y)),
        "f'(x) at the left end": float(dy[0]),
    })
st.dataframe(rows, hide_index=True, column_config={
    "share of the range with f'(x) = 0": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                         max_value=1),
})
st.caption(f"Measured on {len(next(iter(curves.values()))[0])} evenly spaced points of [{lo:g}, {hi:g}]: "
           "a non-zero share means inputs in that part of the range pass no gradient back.")

c1, c2, c3 = st.columns(3)
c1.metric("FeLU minimum at x", f"{x_min:.4f}")
c2.metric("FeLU minimum value", f"{y_min:.4f}")
c3.metric("closed form x = ln(√2 − 1)", f"{np.log(np.sqrt(2) - 1):.4f}")
st.caption("The numerical minimum (golden-section search) matches the closed form: with t = eˣ, "
           "FeLU = (t² − t)/(t + 1) is smallest at t = √2 − 1, where it equals −(3 − 2√2).")

st.subheader("Formulas")
for name in chosen:
    st.markdown(f"**{labels[name]}**" + ("" if registry[name]["in_felu_paper"] else " (not in the paper)"))
    st.latex(r"f(x) = " + registry[name]["latex"])

st.subheader("Your picture through the excitation")
st.markdown("Which part of the curve does a real picture use? The SE models' excitation MLP computes "
            "W1·z for every hidden unit of every block; its activation then decides what passes on. Inputs "
            "left of zero are where ReLU outputs 0 and passes no gradient, and where FeLU still does.")
se_models = [r for r in services.zoo_rows() if r["attention"] == "se" and r["trained"]]
if not se_models:
    st.info("No trained SE model is in the zoo, so there is no excitation to look into.")
    st.stop()
item = ui.one_picture("act")
digests = (item.digest,)
columns = st.columns(len(se_models[:3]))
for column, model in zip(columns, se_models[:3], strict=False):
    activation = model["activation"] if model["activation"] in registry else "relu"
    try:
        values = services.probe_images(model["id"], digests, [item])["excitation_inputs"][0]
    except services.user_errors() as err:
        column.error(f"{model['name']}: {err}")
        continue
    x, y, _ = services.activation_curves(activation, float(min(values.min(), -1.0)), float(max(values.max(), 1.0)))
    with column:
        st.markdown(f"**{model['name']}** · {registry[activation]['label']}")
        st.plotly_chart(figures.excitation_inputs_figure(values, (x, y), label=registry[activation]["label"],
                                                         color=figures.CURVE_COLORS.get(activation, "#1d4ed8")),
                        key=f"act_inputs_{model['id']}")
        negative = float(np.mean(values < 0))
        st.caption(f"{item.name}: the {values.size} hidden units of all SE blocks, each at its input x; "
                   f"{negative:.0%} are below 0, "
                   + ("where ReLU gives 0 and no gradient." if activation == "relu"
                      else f"where {registry[activation]['label']} still gives a small value and a gradient."))
