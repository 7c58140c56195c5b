"""Training from the app: the server's one queue of background runs, their events and histories."""

from __future__ import annotations

import streamlit as st

from services.models import _runs_fingerprint, zoo_rows


def training_jobs():
    """The server's one training queue (`attnviz.jobs.get_jobs`): shared by every session."""
    from attnviz.jobs import get_jobs

    return get_jobs()


def check_archive(name: str, data: bytes):
    """An uploaded ImageFolder zip checked and kept for training (`attnviz.archives.check_archive`)."""
    from attnviz.archives import check_archive as _check

    return _check(data, name)


def start_run(**request):
    from attnviz.jobs import TrainRequest

    return training_jobs().submit(TrainRequest(**request))


def run_status(job_id: str):
    return training_jobs().status(job_id)


def run_summary(events: list[dict]) -> dict:
    from attnviz.jobs import summarize

    return summarize(events)


def list_runs():
    return training_jobs().list_runs()


@st.cache_data(show_spinner=False)
def trainable_specs() -> list[str]:
    """Every spec the registry builds, the zoo's first (the Train form's choices)."""
    from attnviz.catalog import ZOO_SPECS
    from attnviz.models.registry import list_models

    return list(dict.fromkeys([*ZOO_SPECS, *list_models()]))


@st.cache_data(show_spinner=False)
def default_recipe() -> dict:
    from dataclasses import asdict

    from attnviz.training import Recipe

    recipe = Recipe()
    return {**asdict(recipe), "resolved_lr": recipe.resolved_lr}


@st.cache_data(show_spinner=False, max_entries=8)
def _shipped_histories(fingerprint: tuple) -> dict[str, list[dict]]:
    from pathlib import Path

    from attnviz.checkpoints import read_card
    from attnviz.errors import AttnvizError

    out = {}
    for row in zoo_rows():
        if not row["shipped"] or not row["path"]:
            continue
        try:
            history = read_card(Path(row["path"])).get("history") or []
        except AttnvizError:
            continue
        if history:
            out[row["name"]] = history
    return out


def shipped_histories() -> dict[str, list[dict]]:
    """name -> per-epoch history from the shipped model cards that record one."""
    return _shipped_histories(_runs_fingerprint())
