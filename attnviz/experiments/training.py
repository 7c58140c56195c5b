"""Training units for the ``modules`` and ``interflow`` studies, through the one trainer (``attnviz.training``).

Data: the study's CIFAR-10 source is ``$ATTNVIZ_EXPERIMENT_CIFAR10`` when set (any name
``attnviz.data.load_dataset`` accepts, e.g. ``imagefolder:/data/cifar10-jpeg.tar.gz`` or ``cifar10``),
else the shipped ``sample`` set for the tiny and small budgets and torchvision's ``cifar10`` for the
full budget (offline: a clear error naming where to put the files). A budget may cap the images per
class (``ImageDataset.subset``: the first k of each class in stored order, so deterministic).

A unit trains one spec with one seed into ``.work/`` with ``resume=True`` (an interrupted unit
continues from the trainer's last epoch checkpoint), measures what the study needs on the trained
model, and deletes the checkpoint files: the unit's JSON result is what is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from attnviz.experiments.base import ExperimentError

CIFAR_ENV = "ATTNVIZ_EXPERIMENT_CIFAR10"


def cifar_source(budget: str) -> str:
    source = os.environ.get(CIFAR_ENV, "").strip()
    if source:
        return source
    return "cifar10" if budget == "full" else "sample"


def load_cifar(budget: str, per_class: tuple[int, int] | None):
    """(ImageDataset, description) of the study's CIFAR-10 data at this budget."""
    from attnviz.data import load_dataset

    source = cifar_source(budget)
    dataset = load_dataset(source)
    if dataset.num_classes != 10:
        raise ExperimentError(f"{source} has {dataset.num_classes} classes; these studies need CIFAR-10's 10.")
    if per_class is not None:
        dataset = dataset.subset(*per_class)
    label = "the shipped CIFAR-10 sample set" if source == "sample" else source
    description = f"{label}: {dataset.n_train} training / {dataset.n_test} test images"
    return dataset, description


def inference_seconds(model: torch.nn.Module, dataset, device: torch.device) -> float:
    """Wall time of one pass over the test split (``attnviz.training.evaluate``: batches of 500, float32)."""
    from attnviz.training import evaluate

    evaluate(model, dataset.test_images[:64], dataset.test_labels[:64], dataset.mean, dataset.std,
             num_classes=dataset.num_classes, device=device)  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    evaluate(model, dataset.test_images, dataset.test_labels, dataset.mean, dataset.std,
             num_classes=dataset.num_classes, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def train_unit(spec: str, dataset, recipe, work_dir: Path, key: str, device: torch.device, measure=None) -> dict:
    """Train ``spec`` with ``recipe``; return the card's metrics, costs, history and ``measure(model)``."""
    from attnviz.checkpoints import load_checkpoint
    from attnviz.experiments.base import safe_key
    from attnviz.stats import count_params
    from attnviz.training import train

    # The run's name carries a hash of what defines it, so the trainer's resume never continues a
    # stale run of another recipe or data set left in .work/ by an earlier version of the study.
    identity = json.dumps({"spec": spec, "recipe": recipe.to_dict(), "data": dataset.name,
                           "n": [dataset.n_train, dataset.n_test]}, sort_keys=True)
    name = f"{safe_key(key)}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    work_dir.mkdir(parents=True, exist_ok=True)
    result = train(spec, dataset, recipe, out_dir=work_dir, name=name, device=device, resume=True)
    card = result.card
    model, _ = load_checkpoint(result.checkpoint, device=device)
    history = [
        {k: entry.get(k) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time_s")}
        | {"attention": entry.get("attention")}
        for entry in result.history
    ]
    train_times = [entry["time_s"] for entry in result.history if entry.get("time_s") is not None]
    out = {
        "spec": card["spec"],
        "seed": recipe.seed,
        "test_acc": card["metrics"]["test_acc"],
        "test_loss": card["metrics"]["test_loss"],
        "n_test": card["metrics"].get("n_test"),
        "params": count_params(model),
        "flops": card.get("flops"),
        "train_time_s": card.get("train_time_s"),
        "train_s_per_epoch": (sum(train_times) / len(train_times)) if train_times else None,
        "inference_s_per_epoch": inference_seconds(model, dataset, device),
        "device": card.get("device"),
        "history": history,
    }
    if measure is not None:
        out.update(measure(model))
    for suffix in (".safetensors", ".json", ".trainstate"):
        (work_dir / f"{name}{suffix}").unlink(missing_ok=True)
    return out


def run_training_units(study, units: list[tuple[str, str, int]], dataset, data_label: str, device: torch.device, *,
                       epochs: int, batch_size: int, measure=None) -> list[dict]:
    """Train every ``(key, spec, seed)`` unit with the studies' shared recipe; results in ``units`` order.

    The recipe is ``attnviz.training.Recipe`` at its defaults with the budget's epochs and batch size; a
    unit already saved for the same config (spec, data, recipe, device type) is reused.
    """
    from attnviz.training import Recipe

    results = []
    for done, (key, spec, seed) in enumerate(units):
        study.progress(done, len(units), key)
        # The studies keep the trainer's formats from before Recipe.precision/memory_format existed (float32
        # contiguous on a CPU; bf16 + channels_last on CUDA), so every committed unit stays valid and new
        # units are trained exactly like the old ones; the config therefore leaves the two fields out.
        formats = {"precision": "fp32", "memory_format": "contiguous"} if device.type == "cpu" else {}
        recipe = Recipe(epochs=epochs, batch_size=batch_size, seed=seed, probe_size=min(256, dataset.n_test),
                        step_event_every=1000, **formats)
        recipe_fields = {k: v for k, v in recipe.to_dict().items() if k not in ("precision", "memory_format")}
        config = {"spec": spec, "data": data_label, "recipe": recipe_fields, "device": device.type}
        results.append(study.units.run(key, config, lambda s=spec, r=recipe, k=key: train_unit(
            s, dataset, r, study.units.work_dir, k, device, measure=measure)))
    study.progress(len(units), len(units), "writing the report")
    return results
