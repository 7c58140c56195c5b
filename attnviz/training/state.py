"""Where a run stands, on disk: the resume state and the checkpoint's card.

``NAME.trainstate`` is a safetensors file (weights ``model/*``, optimizer buffers ``optim/I/KEY``, the
weight-averaging phase's running mean ``average/*``;
position, recipe, history and time as JSON metadata; never pickle) written after every epoch and on
cancel while a run is unfinished. :func:`read_resume` turns it back into a :class:`ResumePoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from attnviz.checkpoints import atomic_write_bytes, read_card, state_dict_for_saving
from attnviz.data import portable_dataset_name
from attnviz.errors import AttnvizError, CheckpointError, TrainingError

STATE_FORMAT = 1


def state_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.trainstate"


@dataclass
class ResumePoint:
    """Where a resumed run continues: the saved recipe, (epoch, step), history, time and tensors."""

    recipe: dict
    epoch: int
    step: int
    world_size: int
    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0
    averaged: int = 0  # snapshots in the running weight average (attnviz.training.averaging)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model/"):]: v for k, v in self.tensors.items() if k.startswith("model/")}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu").contiguous().clone()
    return tensors


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("optim/"):
            continue
        _, index, name = key.split("/", 2)
        restored.setdefault(int(index), {})[name] = value
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)


def write_state(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer | None, meta: dict,
                extra: dict[str, torch.Tensor] | None = None) -> None:
    tensors = {f"model/{k}": v for k, v in state_dict_for_saving(net).items()}
    if optimizer is not None:
        tensors.update(_optimizer_tensors(optimizer))
    tensors.update(extra or {})
    payload = save(tensors, metadata={"attnviz_state": json.dumps({"format": STATE_FORMAT} | meta, allow_nan=True)})
    atomic_write_bytes(path, payload)


def read_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = json.loads((handle.metadata() or {}).get("attnviz_state", "null"))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        raise TrainingError(f"The training state {path.name} cannot be read ({type(err).__name__}); "
                            "delete it to start over.") from err
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise TrainingError(f"The training state {path.name} is not one this version can resume.")
    return meta, tensors


def read_resume(path: Path, spec: str, world: int) -> ResumePoint:
    """The run saved at ``path``; refuses another model's state or a mid-epoch one for another world size."""
    meta, tensors = read_state(path)
    if meta["spec"] != spec:
        raise TrainingError(f"{path.name} belongs to '{meta['spec']}', not '{spec}'.")
    point = ResumePoint(recipe=dict(meta["recipe"]), epoch=int(meta["epoch"]), step=int(meta["step"]),
                        world_size=int(meta.get("world_size", 1)), history=list(meta.get("history") or []),
                        train_time_s=float(meta.get("train_time_s", 0.0)), averaged=int(meta.get("averaged", 0)),
                        tensors=tensors)
    if point.step and point.world_size != world:
        raise TrainingError("This run stopped mid-epoch with a different number of processes; "
                            "resume it with the same number.")
    return point


def same_schedule(card_recipe: dict | None, recipe) -> bool:
    """Whether a card's recipe has ``recipe``'s main epochs and weight-averaging phase (old cards: none)."""
    card_recipe = card_recipe or {}
    return (card_recipe.get("epochs") == recipe.epochs
            and int(card_recipe.get("average_epochs") or 0) == recipe.average_epochs
            and (not recipe.average_epochs or (card_recipe.get("average_lr") == recipe.resolved_average_lr
                                               and card_recipe.get("average_schedule") == recipe.average_schedule)))


def finished_card(out_dir: Path, name: str, spec: str, dataset: str, recipe) -> tuple[Path, dict] | None:
    """``(card path, card)`` when ``out_dir/name`` already holds this exact run (``recipe``'s schedule), complete."""
    card_path = out_dir / f"{name}.json"
    if not card_path.exists():
        return None
    try:
        card = read_card(card_path)
    except CheckpointError:
        return None
    if (card.get("status") == "complete" and card.get("spec") == spec
            and portable_dataset_name(str(card.get("dataset"))) == portable_dataset_name(dataset)
            and same_schedule(card.get("recipe"), recipe)):
        card["path"] = str(card_path)
        return card_path, card
    return None


def mark_diverged(card_path: Path, reason: str) -> None:
    """Record the reason in the last good checkpoint's card without touching its weights."""
    if not card_path.exists():
        return
    try:
        card = read_card(card_path)
        card["status"] = "diverged"
        card["stopped_reason"] = reason
        atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
    except (CheckpointError, OSError, ValueError):
        pass  # the weights and their card stay as they were


def continue_into_averaging(card_path: Path, target: Path, recipe) -> bool:
    """Write ``target`` (a resume state) that starts ``recipe``'s weight-averaging phase from a finished card.

    For a checkpoint trained to the end of the same main schedule before that phase existed: the phase
    starts with fresh momentum (:mod:`attnviz.training.averaging`), so resuming from the card's weights
    is exactly the run an uninterrupted training would have made. Returns False (and writes nothing)
    when the card is not such a checkpoint: unfinished, another main recipe, or already averaged.
    """
    from attnviz.checkpoints import load_checkpoint
    from attnviz.training.recipe import Recipe

    if not recipe.average_epochs:
        return False
    try:
        card = read_card(card_path)
        card_recipe = Recipe.from_dict(dict(card.get("recipe") or {}))
    except (AttnvizError, TypeError, ValueError):  # unreadable, or a recipe field this version lacks
        return False
    if card.get("status") != "complete" or card_recipe.average_epochs or not card_recipe.same_main_schedule(recipe):
        return False
    model, card = load_checkpoint(card_path)
    meta = {
        "name": card["name"], "spec": card["spec"], "dataset": portable_dataset_name(str(card.get("dataset", ""))),
        "recipe": recipe.to_state(),
        "epoch": recipe.epochs, "step": 0, "averaged": 0, "world_size": 1,
        "history": list(card.get("history") or []), "train_time_s": float(card.get("train_time_s") or 0.0),
        "mean": list(card.get("mean") or []), "std": list(card.get("std") or []),
    }
    write_state(target, model, None, meta)
    return True


def adopt_averaging(path: Path, recipe) -> bool:
    """Give a resume state of ``recipe``'s main schedule (saved before it had the averaging phase) that phase.

    The main schedule is untouched (same fields, the lr never depends on the phase), so the run goes on
    exactly and then averages. Returns True when the state was rewritten (weights and buffers unchanged).
    """
    from attnviz.training.recipe import Recipe

    if not recipe.average_epochs:
        return False
    meta, tensors = read_state(path)
    try:
        saved = Recipe.from_dict(dict(meta["recipe"]))
    except (AttnvizError, TypeError, KeyError):
        return False
    if saved.average_epochs or not saved.same_main_schedule(recipe):
        return False
    meta["recipe"] = recipe.to_state()
    atomic_write_bytes(path, save(tensors, metadata={"attnviz_state": json.dumps(meta, allow_nan=True)}))
    return True
