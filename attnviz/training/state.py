"""Where a run stands, on disk: the resume state and the checkpoint's card.

``NAME.trainstate`` is a safetensors file (weights ``model/*``, optimizer buffers ``optim/I/KEY``;
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
from attnviz.errors import CheckpointError, TrainingError

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


def write_state(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    tensors = {f"model/{k}": v for k, v in state_dict_for_saving(net).items()}
    tensors.update(_optimizer_tensors(optimizer))
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
                        train_time_s=float(meta.get("train_time_s", 0.0)), tensors=tensors)
    if point.step and point.world_size != world:
        raise TrainingError("This run stopped mid-epoch with a different number of processes; "
                            "resume it with the same number.")
    return point


def finished_card(out_dir: Path, name: str, spec: str, dataset: str, epochs: int) -> tuple[Path, dict] | None:
    """``(card path, card)`` when ``out_dir/name`` already holds this exact run, complete; else None."""
    card_path = out_dir / f"{name}.json"
    if not card_path.exists():
        return None
    try:
        card = read_card(card_path)
    except CheckpointError:
        return None
    if (card.get("status") == "complete" and card.get("spec") == spec
            and portable_dataset_name(str(card.get("dataset"))) == portable_dataset_name(dataset)
            and (card.get("recipe") or {}).get("epochs") == epochs):
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
