"""About: what each module computes, the papers' formulas and tables beside what the zoo measured."""

import streamlit as st

import figures
import services

st.title("About attnviz")
st.markdown(
    "attnviz shows what attention modules inside small CNNs actually do on real images. Every module "
    "routes each map it computes through a named *tap*; the app reads those taps for one forward pass "
    "and draws them, next to Grad-CAM-style explanations of the same model. Below: each module's "
    "formulas as the papers give them, the papers' tables as printed, and the same quantities measured "
    "on this installation's zoo."
)

# The papers' numbers as printed (quotations, not results of this code).
FELU_TABLE_1 = [  # FeLU paper, table 1: MNIST, normalised inputs; metrics A-D over 5 runs (accuracy %)
    ("SoftPlus", 97.63, 97.76, 97.68, 97.89), ("Sigmoid", 97.53, 97.61, 97.60, 97.76),
    ("SoftSign", 97.37, 97.46, 97.48, 97.60), ("ReLU", 97.42, 97.54, 97.52, 97.77),
    ("Leaky_ReLU", 97.36, 97.55, 97.97, 97.73), ("FeLU", 97.89, 98.01, 97.92, 98.16),
]
FELU_TABLE_3 = [  # FeLU paper, table 3: test error % on CIFAR-10 / CIFAR-100
    ("DSN", 7.97, 34.57), ("Highway Network", 7.6, 32.24), ("All-CNN", 7.25, 33.71),
    ("ref. [13] (Residual Attention)", 2.92, 19.52), ("ref. [14]", 3.21, 16.65), ("SENet", 4.46, 17.67),
    ("SE-FeLU ResNet (the paper's model)", 3.24, 16.17),
]
LGAM_TABLE_3 = [  # LGAM paper, table 3: ResNet-18 (CIFAR layout) + module; params 1e6, top-1 error %
    ("none", "ResNet 18", 11.17, 5.68, 11.22, 23.52), ("se", "ResNet 18-SE", 11.26, 5.54, 11.31, 23.32),
    ("sge", "ResNet 18-SGE", 11.17, 5.33, 11.22, 23.35), ("cbam", "ResNet 18-CBAM", 11.26, 5.41, 11.31, 23.23),
    ("bam", "ResNet 18-BAM", 11.24, 5.25, 11.29, 23.21), ("lgam", "ResNet 18-LGAM", 11.20, 5.16, 11.25, 22.94),
]

tab_modules, tab_tables, tab_zoo = st.tabs(["Modules and formulas", "Papers' tables vs ours", "How this was made"])

with tab_modules:
    st.header("Squeeze-and-Excitation (SE)")
    st.markdown("Hu, Shen & Sun, CVPR 2018; the SE block explainer and the SE-ResNet-20 CIFAR reproduction. "
                "Squeeze every channel to one number, learn one weight per channel from all of them, rescale.")
    st.latex(r"z_c = \frac{1}{H \times W}\sum_{i=1}^{H}\sum_{j=1}^{W} u_c(i,j) \qquad \text{(1) squeeze}")
    st.latex(r"s = \sigma\big(W_2\,\delta(W_1 z)\big),\quad W_1 \in \mathbb{R}^{\frac{C}{r}\times C},\ "
             r"W_2 \in \mathbb{R}^{C\times\frac{C}{r}} \qquad \text{(2) excitation}")
    st.latex(r"\tilde{x}_c = s_c \cdot u_c \qquad \text{(3) scale}")
    st.markdown("In the zoo: inside each residual block before the addition, r = 16, hidden width "
                "max(1, C/16) — one hidden unit in ResNet-20's 16-channel stage, which is where a dead ReLU "
                "switches the whole excitation off. Page **Channel attention (SE)** shows s per block.")

    st.header("SE with FeLU (SE-FeLU)")
    st.markdown("He & Sun, 2020: the ReLU δ in (2) is replaced by FeLU, formula (4), so that excitation "
                "units with negative input still pass a gradient (the 'dead ReLU' problem of their §2.1).")
    st.latex(r"\mathrm{FeLU}(x) = \begin{cases} \dfrac{e^{x}-1}{1+e^{-x}} & x < 0 \\ x & x > 0 \end{cases}"
             r"\qquad \text{(4)}")
    st.markdown("Page **Activations** draws it beside ReLU with both derivatives.")

    st.header("LGAM: lightweight group-wise attention")
    st.markdown("Zhang, Li & Yang, 2020. Channels are split into G groups; each group gets SE-like channel "
                "weights with a residual; a *ladder* feeds every group's output into the next group; a "
                "spatial map from the channel sum reweights the result, which is added to the input.")
    st.latex(r"s_{chan} = \mathrm{GAP}(x_k),\qquad M_{chan} = \sigma\big(\delta(\mathrm{BN}(\mathrm{MLP}(s_{chan})))\big)"
             r"\qquad (1),(2)")
    st.latex(r"x_k' = M_{chan} \otimes x_k \oplus x_k \qquad (3)")
    st.latex(r"y_k = \begin{cases} F_{chan}(x_k) & k = 1 \\ F_{chan}(x_k + y_{k-1}) & 1 < k \le G \end{cases}"
             r"\qquad (4)\ \text{ladder};\quad A' = [y_1, \dots, y_G]")
    st.latex(r"c_{spat}(s) = \sum_{i=1}^{C} v_s(i),\qquad M_{spat} = \sigma(\delta(c_{spat})) \qquad (5),(6)")
    st.latex(r"A'' = A' \otimes M_{spat} \oplus A \qquad (7)")
    st.markdown("Note (6): a ReLU before the sigmoid means M_spat ≥ 0.5 everywhere — the map can only "
                "boost positions, never suppress them below half. Page **LGAM** shows it per site.")

    st.header("Interflow")
    st.markdown("Stage-wise prediction branches (adaptive average pool → FC → class confidences) on a "
                "backbone cut into n stages, aggregated by **hard** fixed weights, **soft** learned 1×n "
                "branch weights, or **per_class** n×n pointwise weights (one per branch and class).")
    st.latex(r"\hat{y} = \sum_{b=1}^{n} w_b \, \ell_b \quad\text{(hard / soft)},\qquad "
             r"\hat{y}_k = \sum_{b=1}^{n} w_{b,k}\, \ell_{b,k} \quad\text{(per\_class)}")
    st.markdown("ℓ_b are branch b's logits. Page **Interflow** shows w and each branch's own prediction.")

    st.header("The other modules the LGAM paper compares")
    st.markdown("**CBAM** (Woo et al., 2018): channel then spatial attention, applied in sequence.")
    st.latex(r"M_c = \sigma\big(\mathrm{MLP}(\mathrm{Avg}(F)) + \mathrm{MLP}(\mathrm{Max}(F))\big),\quad "
             r"M_s = \sigma\big(f^{7\times7}([\mathrm{Avg}_c(F'); \mathrm{Max}_c(F')])\big)")
    st.markdown("**BAM** (Park et al., 2018): channel and spatial branches in parallel, at the bottlenecks.")
    st.latex(r"M(F) = \sigma\big(M_c(F) + M_s(F)\big),\qquad F' = F + F \otimes M(F)")
    st.markdown("**SGE** (Li, Hu & Yang, 2019): per semantic group, the similarity of each position to "
                "the group's mean feature, normalised, gates that position.")
    st.latex(r"c_i = g \cdot x_i,\ \ \hat{c}_i = \frac{c_i - \mu_c}{\sigma_c},\ \ x_i' = x_i\,\sigma(\gamma \hat{c}_i + \beta)")
    st.markdown("**ECA** (Wang et al., 2020): the FC-free channel attention the SE reproduction asks for: "
                "a 1-D convolution of size k across channels.")
    st.latex(r"\omega = \sigma\big(\mathrm{C1D}_k(\mathrm{GAP}(X))\big),\qquad "
             r"k = \left|\frac{\log_2 C}{\gamma} + \frac{b}{\gamma}\right|_{odd}")

with tab_tables:
    st.subheader("FeLU paper, table 1 — activations in the excitation (MNIST, normalised)")
    st.dataframe([dict(zip(("activation", "A", "B", "C", "D"), row, strict=True)) for row in FELU_TABLE_1],
                 hide_index=True)
    st.caption("As printed. A: mean final validation accuracy over 5 runs; B: validation accuracy at the "
               "best mean training accuracy; C: best final accuracy of a run; D: best accuracy seen. The "
               "gaps are a few tenths of a percent; the Experiments study re-runs this with error bars.")

    st.subheader("FeLU paper, table 3 — test error (%)")
    st.dataframe([dict(zip(("model", "CIFAR-10", "CIFAR-100"), row, strict=True)) for row in FELU_TABLE_3],
                 hide_index=True)
    st.caption("As printed. Note the paper's text quotes 3.14 / 16.27 for its own model, the table "
               "3.24 / 16.17; backbone depth and schedule are not stated, so these are not comparable with "
               "ResNet-20 figures below.")

    st.subheader("LGAM paper, table 3 — ResNet-18 + module, parameters beside ours")
    st.caption("Parameter counts of our ResNet-18 (CIFAR layout) with each module, counted from the "
               "models built by this installation, next to the paper's. Look at the *increase* over the "
               "plain ResNet-18: that is what the module costs.")
    with st.spinner("Counting parameters of six ResNet-18 models..."):
        ours = services.spec_params([f"resnet18-{key}" if key != "none" else "resnet18"
                                     for key, *_ in LGAM_TABLE_3], num_classes=10)
    rows = []
    for key, label, p10, e10, _p100, e100 in LGAM_TABLE_3:
        spec = f"resnet18-{key}" if key != "none" else "resnet18"
        count = ours.get(spec)
        rows.append({
            "model": label, "paper params (1e6, CIFAR-10)": p10,
            "our params (1e6, CIFAR-10)": None if count is None else round(count / 1e6, 3),
            "paper top-1 error % (CIFAR-10)": e10, "paper top-1 error % (CIFAR-100)": e100,
        })
    st.dataframe(rows, hide_index=True)
    if any(v is None for v in ours.values()):
        st.caption("A blank means that model cannot be built by this installation yet.")

    st.subheader("What the shipped zoo measured (ResNet-20 on CIFAR-10)")
    zoo = [row for row in services.zoo_rows() if row["shipped"]]
    if not zoo:
        st.info("No trained checkpoints are shipped with this installation yet, so there is nothing "
                "measured to put beside the papers. Train one on the **Train** page, or see the Zoo.")
    else:
        table = [{"model": r["name"], "spec": r["spec"], "params": r["params"],
                  "test error %": None if r["test_acc"] is None else round(100 * (1 - r["test_acc"]), 2),
                  "dataset": r["dataset"], "epochs": r.get("epochs")} for r in zoo]
        st.dataframe(table, hide_index=True)
        acc = [(r["name"], 100 * (1 - r["test_acc"])) for r in zoo if r["test_acc"] is not None]
        if acc:
            st.plotly_chart(figures.bar_figure([a for a, _ in acc], [e for _, e in acc], y_title="test error %",
                                          colors="#c2410c"), key="about_zoo_err")
            st.caption("Test error of every shipped model, same recipe for all: differences smaller than "
                       "the seed-to-seed spread (see Experiments) are not evidence of a better module.")

with tab_zoo:
    st.markdown(
        "- **Library**: `attnviz` (PyTorch). Modules in `attnviz/layers/`, backbones in `attnviz/models/`, "
        "probes (`attnviz.probe`) read the taps, `attnviz.analysis.explanations` wraps pytorch-grad-cam and captum.\n"
        "- **Checkpoints**: safetensors weights plus a JSON card (recipe, data, metrics, sha256); never "
        "pickles. Shipped ones in `checkpoints/`, your runs in `$ATTNVIZ_HOME/runs` (default `~/.attnviz/runs`).\n"
        "- **Command line**: `attnviz zoo`, `attnviz params`, `attnviz train`, `attnviz eval`, `attnviz inspect`.\n"
        "- **Papers**: FeLU/SE-FeLU (He & Sun, 2020), LGAM (Zhang, Li & Yang, 2020), Interflow, "
        "Squeeze-and-Excitation (Hu, Shen & Sun, 2018) and its CIFAR reproduction; CBAM, BAM, SGE and ECA "
        "from their original papers."
    )
    st.caption(f"attnviz {services.versions().get('attnviz', '?')} · torch {services.versions().get('torch', '?')}")
