"""The zoo, its models and the machine: zoo rows, shared read-only models (loaded once per process), the sidebar, the activation curves, and the compute counters the tests read."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import streamlit as st

# model id -> number of times its weights were loaded in this process (the cache makes it 1)
LOAD_COUNTS: Counter[str] = Counter()


_COUNT_LOCK = threading.Lock()


@st.cache_data(show_spinner=False, max_entries=256)
def activation_curves(name: str, lo: float, hi: float, n: int = 801):
    """(x, y, dy) arrays of one activation on [lo, hi] (`attnviz.layers.activations.sample_activation`)."""
    from attnviz.layers.activations import sample_activation

    return sample_activation(name, lo, hi, n)


@st.cache_data(show_spinner=False)
def activation_registry() -> dict[str, dict]:
    """name -> {label, latex, in_felu_paper} of every registered activation."""
    from attnviz.layers.activations import ACTIVATIONS

    return {name: {"label": info.label, "latex": info.latex, "in_felu_paper": info.in_felu_paper}
            for name, info in ACTIVATIONS.items()}


@st.cache_data(show_spinner=False)
def felu_minimum() -> tuple[float, float]:
    from attnviz.layers.activations import felu_minimum as _felu_minimum

    return _felu_minimum()


def _runs_fingerprint() -> tuple:
    """Cheap signature of the shipped and run checkpoint folders: a finished run changes it."""
    from attnviz.checkpoints import checkpoint_dirs
    from attnviz.paths import runs_dir

    runs = runs_dir()
    paths = [*checkpoint_dirs(), *(runs.iterdir() if runs.is_dir() else [])]
    out = []
    for path in paths:
        try:
            out.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_rows(fingerprint: tuple) -> list[dict]:
    from attnviz.catalog import zoo_rows

    return [row.as_dict() for row in zoo_rows()]


def zoo_rows() -> list[dict]:
    """Every model of the zoo as plain dicts (`attnviz.catalog.zoo_rows`), refreshed when a run ends."""
    return _zoo_rows(_runs_fingerprint())


@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_costs(fingerprint: tuple) -> list[dict]:
    from attnviz.catalog import measure_costs, zoo_rows

    rows = measure_costs(zoo_rows(), latency=False)
    measured = device_report()["latencies"]  # taken at server start, the sidebar's numbers too
    for row in rows:
        row.cpu_latency_ms = measured.get(f"{row.spec}|{row.num_classes}")
    # a model that appeared after the server started (a finished run) is measured once, the same way
    measure_costs([row for row in rows if row.cpu_latency_ms is None])
    return [row.as_dict() for row in rows]


def zoo_rows_with_costs() -> list[dict]:
    """The zoo with params, FLOPs and the CPU latencies measured at server start (`device_report`)."""
    return _zoo_costs(_runs_fingerprint())


@st.cache_data(show_spinner=False, max_entries=64)
def zoo_note(path: str | None, sha256: str | None) -> str | None:
    """The card's ``zoo_note`` (why a shipped entry differs from the paper-literal spec), if any."""
    from attnviz.checkpoints import read_card
    from attnviz.errors import CheckpointError

    if not path:
        return None
    try:
        return read_card(Path(path)).get("zoo_note")
    except CheckpointError:
        return None


def zoo_by_id() -> dict[str, dict]:
    return {row["id"]: row for row in zoo_rows()}


@st.cache_data(show_spinner=False)
def spec_params(specs: list[str], num_classes: int = 10) -> dict[str, int | None]:
    from attnviz.catalog import spec_params as _spec_params

    return _spec_params(list(specs), num_classes)


@st.cache_resource(show_spinner=False)
def serving_threads() -> tuple[int, str | None]:
    """Torch's threads for this process, set once before any model runs
    (`attnviz.device.configure_serving_threads`): (threads, the error of a bad ATTNVIZ_THREADS or None)."""
    import torch

    from attnviz.device import DEFAULT_SERVING_THREADS, configure_serving_threads
    from attnviz.errors import AttnvizError

    try:
        return configure_serving_threads(), None
    except AttnvizError as err:
        torch.set_num_threads(DEFAULT_SERVING_THREADS)
        return DEFAULT_SERVING_THREADS, str(err)


@st.cache_resource(show_spinner=False)
def heap_trimmer() -> str | None:
    """Start, once per process, the thread that hands freed memory back to the system every
    ``ATTNVIZ_TRIM_SECONDS`` (`attnviz.device.start_heap_trimmer`); returns the sentence for a bad setting
    (the default is used then), or None."""
    from attnviz.device import DEFAULT_TRIM_INTERVAL_S, start_heap_trimmer, trim_interval
    from attnviz.errors import AttnvizError

    try:
        start_heap_trimmer(trim_interval())
        return None
    except AttnvizError as err:
        start_heap_trimmer(DEFAULT_TRIM_INTERVAL_S)
        return f"{err} Returning free memory every {DEFAULT_TRIM_INTERVAL_S:.0f} s instead."


@st.cache_resource(show_spinner=False)
def _libraries_loaded() -> bool:
    """Import, once per process, what the pages would import on first use (the explanation libraries;
    pandas and pyarrow for tables; Plotly), so that `settle_heap` after a model load freezes them too:
    left unfrozen, they are ~280,000 objects the collection after every rerun walks (~0.2 s)."""
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import pyarrow  # noqa: F401

    from attnviz.analysis.explanations import load_backends

    load_backends()
    return True


@st.cache_resource(show_spinner=False, max_entries=24)
def _load_model(model_id: str, path: str | None, sha256: str | None):
    from attnviz.catalog import ZooRow, build_model
    from attnviz.device import settle_heap

    serving_threads()  # before the first model runs (the sidebar has normally done it)
    _libraries_loaded()
    row = ZooRow.from_dict(zoo_by_id()[model_id])
    model, card = build_model(row)  # eval() and requires_grad_(False) inside: shared read-only
    settle_heap()  # the model and every import so far leave the per-rerun collection's sight
    with _COUNT_LOCK:
        LOAD_COUNTS[model_id] += 1
    return model, card


def load_model(model_id: str):
    """(model, card) of a zoo model, loaded once per process and shared read-only by all sessions."""
    row = zoo_by_id().get(model_id)
    if row is None:
        from attnviz.errors import CheckpointError

        raise CheckpointError(f"There is no model '{model_id}' in the zoo.")
    return _load_model(model_id, row["path"], row["weights_sha256"])


@st.cache_resource(show_spinner=False)
def device_report() -> dict:
    """The compute device and its measured speed (`attnviz.catalog.device_report`), once per process."""
    from attnviz.catalog import device_report as _device_report

    serving_threads()  # measured with the threads the models will run on
    return _device_report()


@st.cache_data(show_spinner=False)
def versions() -> dict[str, str]:
    from attnviz.report import library_versions

    return library_versions()


PREFERRED_DEFAULTS = ("resnet20-se", "resnet20-se-felu", "resnet20-lgam")


def default_model_ids(rows: list[dict]) -> list[str]:
    """What the pages show before the user picks: the SE, SE-FeLU and LGAM ResNet-20s when trained
    ones exist (shipped first, then your runs), else the untrained architectures of the same names."""
    chosen = []
    for source in ("shipped", "your run", "untrained"):
        for spec in PREFERRED_DEFAULTS:
            for row in rows:
                # by zoo name too: a shipped entry's spec may carry options (resnet20-lgam:zero_init_residual=true)
                if row["source"] == source and spec in (row["spec"], row["name"]) and spec not in {r[1] for r in chosen}:
                    chosen.append((row["id"], spec))
                    break
        if chosen:
            break
    return [row_id for row_id, _ in chosen]


def sidebar() -> list[str]:
    """The sidebar every page shows, drawn once by the entry file: the shared model choice (returned)
    and the device line."""
    import components as ui

    threads_error = serving_threads()[1]
    if threads_error:
        st.sidebar.warning(f"{threads_error} Using 1 thread.", icon=":material/warning:")
    trim_error = heap_trimmer()
    if trim_error:
        st.sidebar.warning(trim_error, icon=":material/warning:")
    rows = zoo_rows()
    chosen = ui.model_picker(rows, default_model_ids(rows))
    ui.device_badge(device_report())
    return chosen


def chosen_models() -> list[str]:
    """The zoo ids picked in the sidebar (drawn by the entry file before the page runs)."""
    return list(st.session_state.get("models", []))

# model-side work done per (kind of result) in this process, for tests: a display-only change adds 0
COMPUTE_COUNTS: Counter[str] = Counter()


def _count(*kinds: str) -> None:
    with _COUNT_LOCK:
        for kind in kinds:
            COMPUTE_COUNTS[kind] += 1
