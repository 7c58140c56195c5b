"""Train: start a short run in a background process, watch it live, compare it with earlier runs."""

import streamlit as st

import components as ui
import figures
import services

st.title("Train a model")
st.markdown("Runs go to a background process on this server, one at a time: a second request waits in a "
            "queue and is told so. Finished runs appear in the **Zoo** next to the shipped models. The "
            "default — one epoch of ResNet-20 on the shipped 2,000-image sample — takes about a minute on a laptop CPU.")

chosen = services.chosen_models()
jobs = services.training_jobs()
running_id, queued_ids = jobs.running(), jobs.queue()
if running_id:
    current = services.run_status(running_id)
    waiting = f"; {len(queued_ids)} waiting" if queued_ids else ""
    st.info(f"The trainer is busy with **{current.request['spec']}** on {current.request['dataset']}{waiting}. "
            "A new run joins the queue.", icon=":material/hourglass_top:")
else:
    st.caption("The trainer is idle: a new run starts at once.")

# --------------------------------------------------------------------------------------------- form
DATASETS = ["sample", "cifar10", "cifar100", "mnist", "fashionmnist", "upload"]
DATASET_LABELS = {"sample": "sample (2,000 CIFAR-10 images, shipped)", "cifar10": "CIFAR-10",
                  "cifar100": "CIFAR-100", "mnist": "MNIST", "fashionmnist": "Fashion-MNIST",
                  "upload": "my images (ImageFolder .zip)"}
specs = services.trainable_specs()
recipe = services.default_recipe()
with st.form("train_form"):
    c1, c2, c3 = st.columns([1.4, 1.2, 1])
    with c1:
        spec = st.selectbox("Model", specs, index=specs.index("resnet20-se-felu") if "resnet20-se-felu" in specs else 0,
                            key="train_spec", help="ARCH[-ATTENTION[-ACTIVATION]][-interflow-MODE]")
        custom = st.text_input("…or type a spec", key="train_custom", placeholder="e.g. resnet20-se:reduction=8")
    with c2:
        dataset = st.radio("Dataset", DATASETS, format_func=DATASET_LABELS.get, key="train_dataset")
        archive = st.file_uploader("ImageFolder .zip (class sub-folders; used with 'my images')", type=["zip"],
                                   key="train_zip")
    with c3:
        epochs = st.number_input("Epochs", 1, 200, 1, key="train_epochs")
        batch_size = st.select_slider("Batch size", [32, 64, 128, 256, 512], value=128, key="train_batch")
        lr = st.number_input("Peak learning rate (0 = 0.2 × batch/256)", 0.0, 5.0, 0.0, 0.01, format="%.3f",
                             key="train_lr")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="train_seed")
    submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")

if submitted and dataset == "upload" and archive is None:
    st.error("Choose a .zip of class sub-folders to train on your images.", icon=":material/error:")
elif submitted:
    try:
        data_name = dataset
        if dataset == "upload":
            summary = services.check_archive(archive.name, archive.getvalue())
            data_name = summary.dataset
            st.success(f"{archive.name}: {len(summary.classes)} classes ({', '.join(summary.classes[:8])}"
                       f"{'…' if len(summary.classes) > 8 else ''}), {summary.n_train} training and "
                       f"{summary.n_test} test images of {summary.image_size[0]}×{summary.image_size[1]}.")
        status = services.start_run(spec=(custom.strip() or spec), dataset=data_name, epochs=int(epochs),
                                    batch_size=int(batch_size), lr=float(lr) or None, seed=int(seed))
        st.session_state.setdefault("my_runs", []).insert(0, status.job_id)
        st.session_state["train_watch"] = status.job_id
        if status.state == "queued":
            st.info(f"Another run is training. Yours ({status.request['spec']}) is number {status.position} in "
                    "the queue and starts when the runs ahead of it end.", icon=":material/queue:")
        else:
            st.success(f"Started {status.request['spec']} on {status.request['dataset']}.", icon=":material/rocket_launch:")
    except services.user_errors() as err:
        st.error(str(err), icon=":material/error:")

# ----------------------------------------------------------------------------------------- live view
runs = services.list_runs()
if not runs:
    st.caption("No runs yet on this server.")
    st.stop()
by_id = {r.job_id: r for r in runs}
if st.session_state.get("train_watch") not in by_id:
    st.session_state["train_watch"] = running_id or runs[0].job_id


def run_label(job_id: str) -> str:
    r = by_id[job_id]
    return f"{r.request['spec']} · {r.request['dataset'].split('/')[-1]} · {r.request['epochs']} ep · {job_id[:15]}"


st.subheader("Watch a run")
watch = st.selectbox("Run", list(by_id), format_func=run_label, key="train_watch")
active = not by_id[watch].done
with st.expander("Pictures to watch while it learns (yours first)", expanded=False):
    watched = services.usable_pictures(ui.image_inputs(services.gallery(), key="train", max_images=4), limit=4)


def pictures_through_run(run_dir: str, pictures: list) -> None:
    """The run's latest checkpoint (written after every epoch) on the watched pictures."""
    row = next((r for r in services.zoo_rows() if r["own_run"] and r["path"] and r["path"].startswith(run_dir)), None)
    if row is None or not pictures:
        return
    try:
        probs = services.probe_images(row["id"], tuple(p.digest for p in pictures), pictures)["probs"]
    except services.user_errors() as err:
        st.caption(f"The run's checkpoint cannot be read yet: {err}")
        return
    names = row.get("class_names") or []
    st.markdown(f"**Your pictures through this run** (its checkpoint after {row.get('epochs') or 0:g} epoch(s))")
    for column, picture, p in zip(st.columns(max(len(pictures), 4)), pictures, probs, strict=False):
        top = int(p.argmax())
        column.image(picture.thumbnail, caption=f"{picture.name}: {names[top] if top < len(names) else top} "
                                                f"{p[top]:.0%}", width="stretch")
    st.caption("Redrawn after every epoch: watch the answers firm up (or change) as the network learns.")


def attention_panel(epochs: list[dict], job_id: str) -> None:
    """The attention statistics the trainer recorded after each epoch (dead SE units, channel weights, branches)."""
    attention = epochs[-1].get("attention") or {}
    st.markdown("**Attention statistics** (end of the last epoch, fixed probe batch of test images)")
    a1, a2 = st.columns(2)
    dead = [e.get("attention", {}).get("dead_fraction_total") for e in epochs]
    if any(d is not None for d in dead):
        a1.plotly_chart(figures.bar_figure([f"epoch {e['epoch']}" for e in epochs], [d or 0 for d in dead],
                                      colors="#7e22ce", y_title="dead SE hidden units", y_range=(0, 1),
                                      height=260, text_format=".1%"), key=f"live_dead_{job_id}")
        a1.caption("Share of SE excitation units that are ≤ 0 for every probe image (dead for ReLU; FeLU "
                   "still passes a gradient there).")
    weights = attention.get("channel_weight_mean") or {}
    if weights:
        a2.plotly_chart(figures.site_bars_figure(weights, y_title="mean channel weight"), key=f"live_w_{job_id}")
        a2.caption("Mean channel weight of each attention site: near 0.5 = undecided, far from it = "
                   "the module rescales its channels strongly.")
    branch = attention.get("interflow_branch_weights")
    if branch:
        flat = branch if not isinstance(branch[0], list) else [sum(row) / len(row) for row in branch]
        a1.plotly_chart(figures.bar_figure([f"branch {i + 1}" for i in range(len(flat))], flat, colors="#15803d",
                                      y_title="branch weight", y_range=None, height=260, text_format=".3f"),
                        key=f"live_branch_{job_id}")
        a1.caption("Interflow's aggregation weight of each stage branch (per_class: averaged over classes).")
    if not (weights or branch or any(d is not None for d in dead)):
        st.caption("This model has no attention sites with statistics to show.")


@st.fragment(run_every=2.0 if active else None)
def live_panel(job_id: str) -> None:
    status = services.run_status(job_id)
    summary = services.run_summary(status.events)
    start = summary["start"] or {}
    state_icon = {"running": ":material/sync:", "queued": ":material/hourglass_top:", "finished": ":material/check_circle:",
                  "cancelled": ":material/cancel:", "failed": ":material/error:", "diverged": ":material/warning:",
                  "interrupted": ":material/pause_circle:"}.get(status.state, "")
    st.markdown(f"{state_icon} **{status.request['spec']}** on **{status.request['dataset']}** — {status.state}"
                + (f" (number {status.position} in the queue)" if status.state == "queued" else ""))
    last = summary["last_step"] or {}
    if last:
        progress_text = (f"epoch {last.get('epoch', 0)}/{start.get('epochs', status.request['epochs'])}, "
                         f"step {last.get('global_step', 0)}/{last.get('total_steps', '?')}")
    else:
        progress_text = {"queued": "waiting for the run ahead", "running": "loading the data…"}.get(
            status.state, f"{status.state} before the first progress report")
    st.progress(summary["fraction"], text=progress_text)
    epochs = summary["epochs"]
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("images/s", f"{summary['images_per_s']:.0f}" if summary["images_per_s"] else "–")
    m2.metric("ETA", ui.format_seconds(summary["eta_s"]) if not status.done else "done")
    m3.metric("train loss", f"{last['loss']:.3f}" if last.get("loss") is not None else "–")
    m4.metric("train accuracy", f"{100 * last['train_acc']:.1f}%" if last.get("train_acc") is not None else "–")
    test_acc = (summary["end"] or {}).get("test_acc") or (epochs[-1].get("test_acc") if epochs else None)
    m5.metric("test accuracy", f"{100 * test_acc:.1f}%" if test_acc is not None else "–")
    if status.state in ("failed", "diverged", "cancelled", "interrupted") and status.message:
        (st.warning if status.state == "cancelled" else st.error)(status.message)
    if summary["steps"]["global_step"]:
        left, right = st.columns(2)
        left.plotly_chart(figures.live_curves_figure(summary, metric="loss"), key=f"live_loss_{job_id}")
        left.caption("Loss falling = learning; test loss (dots, once per epoch) well above train loss = overfitting.")
        right.plotly_chart(figures.live_curves_figure(summary, metric="acc"), key=f"live_acc_{job_id}")
        right.caption("Accuracy on the training batches so far and on the held-out test split after each epoch.")
    pictures_through_run(status.run_dir, watched)
    if epochs:
        attention_panel(epochs, job_id)
    if not status.done:
        if st.button("Cancel this run", key=f"cancel_{job_id}", icon=":material/stop_circle:"):
            services.training_jobs().cancel(job_id)
            st.toast("Cancelling after the current step; the last consistent checkpoint is kept.")
    elif active:
        st.rerun()  # it just ended: redraw the whole page once (the new checkpoint is in the zoo now)
    if status.state in ("finished", "cancelled"):
        row = next((r for r in services.zoo_rows() if r["own_run"]
                    and r["path"] and r["path"].startswith(status.run_dir)), None)
        if row is not None:
            st.success(f"In the zoo as **{row['name']}**"
                       + (f" with {100 * row['test_acc']:.2f}% test accuracy." if row["test_acc"] is not None else "."))
            if st.button("Compare it with the chosen models", key=f"compare_{job_id}", icon=":material/compare:"):
                st.session_state["models"] = list(dict.fromkeys([row["id"], *chosen]))[:8]
                st.switch_page("views/inspect_image.py")


live_panel(watch)

# ------------------------------------------------------------------------------------- overlay runs
st.subheader("Compare runs")
finished = [r for r in runs if r.state in ("finished", "cancelled")]
shipped_histories = services.shipped_histories()
if not finished and not shipped_histories:
    st.caption("Finished runs can be overlaid here.")
    st.stop()
options = [f"run:{r.job_id}" for r in finished] + [f"shipped:{name}" for name in shipped_histories]


def overlay_label(key: str) -> str:
    kind, ident = key.split(":", 1)
    return run_label(ident) if kind == "run" else f"{ident} (shipped)"


picked = st.multiselect("Runs to overlay", options, default=options[: min(3, len(options))],
                        format_func=overlay_label, key="train_overlay")
histories = {}
for key in picked:
    kind, ident = key.split(":", 1)
    if kind == "run":
        histories[overlay_label(key)] = services.run_summary(services.run_status(ident).events)["epochs"]
    else:
        histories[overlay_label(key)] = shipped_histories[ident]
histories = {k: v for k, v in histories.items() if v}
if histories:
    colors = [figures.model_color(i) for i in range(len(histories))]
    o1, o2 = st.columns(2)
    o1.plotly_chart(figures.runs_overlay_figure(histories, colors, key="test_acc", y_title="test accuracy", percent=True),
                    key="overlay_acc")
    o1.caption("Test accuracy after each epoch: compare how fast and how far each run gets.")
    o2.plotly_chart(figures.runs_overlay_figure(histories, colors, key="test_loss", y_title="test loss"), key="overlay_loss")
    o2.caption("Test loss after each epoch: a curve that turns up while accuracy stalls is overfitting.")
else:
    st.caption("The chosen runs have no completed epoch to draw yet.")
