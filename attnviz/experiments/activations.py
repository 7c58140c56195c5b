"""Study 1: which activation belongs in the SE excitation? (FeLU paper, He & Sun 2020, §3.1-3.2, tables 1-2)

The paper's set-up (§3.1): a small network — an input layer, one convolutional layer with channel
attention (an SE block whose excitation uses the activation under test), and a fully connected
output layer — trained on MNIST, inputs either normalised (to [0, 1]) or standardised (zero mean,
unit standard deviation), 5 runs per activation, 100 iterations per run, scored by metrics A-D
(:func:`attnviz.experiments.metrics.felu_metrics`). We add what the paper only asserts: the fraction
of dead excitation units over training.

Where we depart from, or fill in, the paper (it does not give these details):
- Network: conv 3x3 with ``FILTERS`` = 64 filters (ReLU) -> SE (``SqueezeExcite`` of
  ``attnviz.layers``, reduction 16 as in the paper's §2.2, so 4 hidden excitation units, the
  activation under test between the two FCs, sigmoid gate) -> 2x2 max-pooling (no weights; it only
  shrinks the output layer) -> one fully connected layer to the classes.
- "Iteration" = one epoch (one pass over the training split); a run's curves are recorded after
  every epoch. Training accuracy = the running accuracy over the epoch's mini-batches (what Keras
  reports as the epoch's ``accuracy``); validation accuracy = accuracy on the held-out split after
  the epoch.
- Optimiser: Adam, lr 1e-3, batch 128, no weight decay, no augmentation (the paper names none for
  this experiment; these are the Keras defaults of its time). Run r uses seed r.
- Data: MNIST when torchvision has it or can download it; offline (the shipped default), the 8x8
  digits of scikit-learn (1,797 images; a stratified 80/20 split with ``random_state=0`` is the
  validation split) as a labelled stand-in, and CIFAR-10 (the shipped ``sample`` set, or the data set
  named by ``$ATTNVIZ_EXPERIMENT_CIFAR10``, e.g. ``imagefolder:/data/cifar10-jpeg.tar.gz``), whose
  test split is the validation split.
- Normalised: x / max (255, or 16 for the digits). Standardised: per channel, minus the training
  split's mean and divided by its standard deviation.
- Dead units, two readings, on a fixed probe batch (the first 256 validation images) after every
  epoch: ``dead_relu`` = hidden excitation units whose pre-activation is <= 0 for every probe image
  (the trainer's definition; for ReLU these pass no gradient at all); ``dead_gradient`` = units where
  the activation's derivative is below ``GRADIENT_FLOOR`` (1e-3) in absolute value for every probe
  image — the "gradient death" the paper's §2.1 is about, comparable across activations.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.experiments.base import ExperimentError, Progress, StudyRun, _no_progress, check_budget

STUDY = "activations"
TITLE = "Activations in the SE excitation (FeLU paper, tables 1-2)"
QUESTION = (
    "Does FeLU in the excitation of an SE block beat Softplus, Sigmoid, SoftSign, ReLU and Leaky ReLU "
    "on the FeLU paper's small network (one conv layer with channel attention, one FC output), with "
    "normalised and standardised inputs, 5 runs each, scored by the paper's metrics A-D? And do ReLU "
    "excitation units actually die?"
)
ACTIVATIONS = ("softplus", "sigmoid", "softsign", "relu", "leaky_relu", "felu")
PREPROCESSINGS = ("normalised", "standardised")
FILTERS = 64
REDUCTION = 16
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
PROBE_SIZE = 256
GRADIENT_FLOOR = 1e-3


@dataclass(frozen=True)
class ActivationsBudget:
    datasets: tuple[str, ...]
    runs: int
    epochs: dict  # dataset -> epochs
    per_class: dict  # dataset -> (train per class, validation per class) or None = all
    activations: tuple[str, ...] = ACTIVATIONS

    def describe(self) -> dict:
        return {
            "data sets": ", ".join(self.datasets),
            "runs per cell": self.runs,
            "epochs (iterations)": ", ".join(f"{d}: {self.epochs[d]}" for d in self.datasets),
            "activations": ", ".join(self.activations),
            "images per class (train/val)": ", ".join(
                f"{d}: {'all' if self.per_class.get(d) is None else '/'.join(map(str, self.per_class[d]))}"
                for d in self.datasets),
            "network": f"conv3x3({FILTERS}) + SE(r={REDUCTION}) + maxpool2 + FC; Adam {LEARNING_RATE}, batch {BATCH_SIZE}",
            "threads": "1 (torch.set_num_threads during the study)",
        }


BUDGETS = {
    "tiny": ActivationsBudget(datasets=("digits", "cifar10"), runs=2, epochs={"digits": 2, "cifar10": 2},
                              per_class={"digits": (20, 10), "cifar10": (10, 5)}, activations=("relu", "felu")),
    "small": ActivationsBudget(datasets=("mnist", "digits", "cifar10"), runs=5,
                               epochs={"mnist": 20, "digits": 100, "cifar10": 10},
                               per_class={"mnist": (300, 100), "digits": None, "cifar10": (100, 50)}),
    "full": ActivationsBudget(datasets=("mnist", "digits", "cifar10"), runs=5,
                              epochs={"mnist": 100, "digits": 100, "cifar10": 100},
                              per_class={"mnist": None, "digits": None, "cifar10": None}),
}


# ---------------------------------------------------------------------------------------------
# the network


class ExcitationNet(nn.Module):
    """The FeLU paper's §3.1 network: input -> conv with channel attention (SE) -> FC output.

    Departure: a 2x2 max-pooling between the SE block and the FC (see the module docstring).
    """

    def __init__(self, in_chans: int, image_size: tuple[int, int], num_classes: int, activation: str):
        super().__init__()
        from attnviz.layers.squeeze_excite import SqueezeExcite

        self.conv = nn.Conv2d(in_chans, FILTERS, 3, padding=1)
        self.conv_act = nn.ReLU()
        self.attn = SqueezeExcite(FILTERS, reduction=REDUCTION, activation=activation)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(FILTERS * (image_size[0] // 2) * (image_size[1] // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.attn(self.conv_act(self.conv(x)))).flatten(1))

    @torch.no_grad()
    def excitation_preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """[B, hidden]: the SE hidden layer's input (W1 z + b1), i.e. what ``attn.tap_hidden`` sees."""
        features = self.conv_act(self.conv(x))
        return self.attn.fc_reduce(self.attn.squeeze(features).flatten(1))


def dead_fractions(net: ExcitationNet, probe: torch.Tensor) -> tuple[float, float]:
    """(dead_relu, dead_gradient) fractions of the excitation's hidden units on ``probe``."""
    pre = net.excitation_preactivation(probe)
    dead_relu = float((pre <= 0).all(dim=0).float().mean())
    with torch.enable_grad():
        inputs = pre.detach().clone().requires_grad_(True)
        net.attn.act(inputs).sum().backward()
        slope = inputs.grad.abs()
    dead_gradient = float((slope < GRADIENT_FLOOR).all(dim=0).float().mean())
    return dead_relu, dead_gradient


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class ArrayData:
    """Float images [N, C, H, W] on the 0..1 scale with labels; the split is fixed."""

    name: str
    source: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int

    def prepared(self, preprocessing: str) -> tuple[torch.Tensor, torch.Tensor]:
        if preprocessing == "normalised":
            return self.train_x, self.val_x
        dims = (0, 2, 3)
        mean = self.train_x.mean(dim=dims, keepdim=True)
        std = self.train_x.std(dim=dims, keepdim=True).clamp_min(1e-6)
        return (self.train_x - mean) / std, (self.val_x - mean) / std


def _take_per_class(x: torch.Tensor, y: torch.Tensor, per_class: int | None, classes: int):
    if per_class is None:
        return x, y
    picks = torch.cat([torch.nonzero(y == k).flatten()[:per_class] for k in range(classes)])
    picks = torch.sort(picks).values
    return x[picks], y[picks]


def _digits(per_class) -> ArrayData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # 0..16 -> 0..1
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0,
                                          stratify=bunch.target)
    train_x, train_y = images[idx_train], labels[idx_train]
    val_x, val_y = images[idx_val], labels[idx_val]
    if per_class is not None:
        train_x, train_y = _take_per_class(train_x, train_y, per_class[0], 10)
        val_x, val_y = _take_per_class(val_x, val_y, per_class[1], 10)
    return ArrayData("digits", "scikit-learn load_digits (8x8), stratified 80/20 split, random_state=0",
                     train_x, train_y, val_x, val_y, 10)


def _from_image_dataset(name: str, source: str, dataset, per_class) -> ArrayData:
    if per_class is not None:
        dataset = dataset.subset(*per_class)
    return ArrayData(name, source, dataset.train_images.float() / 255.0, dataset.train_labels,
                     dataset.test_images.float() / 255.0, dataset.test_labels, dataset.num_classes)


def _mnist_available() -> tuple[bool, str]:
    """MNIST is used if torchvision already has it, or if it can be downloaded (quick network check)."""
    import socket

    from attnviz.paths import data_root as default_data_root

    raw = default_data_root() / "MNIST" / "raw"
    if raw.is_dir() and any(raw.iterdir()):
        return True, "found on disk"
    if os.environ.get("ATTNVIZ_OFFLINE"):
        return False, "ATTNVIZ_OFFLINE is set"
    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=5).close()
        return True, "downloadable"
    except OSError:
        return False, "the network is unreachable"


def load_study_data(name: str, per_class, notes: list[str]) -> ArrayData | None:
    """One of the study's data sets, or None (with a note saying why) when it cannot be had."""
    from attnviz.data import load_dataset
    from attnviz.errors import DatasetError
    from attnviz.experiments.training import CIFAR_ENV

    if name == "digits":
        return _digits(per_class)
    if name == "mnist":
        ok, why = _mnist_available()
        if not ok:
            notes.append(f"MNIST skipped ({why}); the 8x8 scikit-learn digits stand in for it.")
            return None
        try:
            dataset = load_dataset("mnist")
        except DatasetError as err:
            notes.append(f"MNIST skipped: {err}")
            return None
        return _from_image_dataset("mnist", "MNIST (torchvision), test split as validation", dataset, per_class)
    if name == "cifar10":
        source = os.environ.get(CIFAR_ENV, "").strip() or "sample"
        dataset = load_dataset(source)
        if dataset.num_classes != 10:
            raise ExperimentError(f"{source} has {dataset.num_classes} classes; the CIFAR-10 study needs 10.")
        label = "the shipped CIFAR-10 sample set" if source == "sample" else source
        return _from_image_dataset("cifar10", f"CIFAR-10: {label}, test split as validation", dataset, per_class)
    raise ExperimentError(f"Unknown data set '{name}' for the activations study.")


# ---------------------------------------------------------------------------------------------
# one run


def _initial(data: ArrayData, preprocessing: str, activation: str, seed: int):
    """(net at initialisation, train inputs, validation inputs): the start of run ``seed``."""
    train_x, val_x = data.prepared(preprocessing)
    torch.manual_seed(seed)
    net = ExcitationNet(train_x.shape[1], tuple(train_x.shape[2:]), data.num_classes, activation)
    return net, train_x, val_x


def dead_at_init(data: ArrayData, preprocessing: str, activation: str, seed: int) -> tuple[float, float]:
    """Dead-unit fractions of run ``seed`` before its first step (same weights as ``train_one`` starts from)."""
    net, _, val_x = _initial(data, preprocessing, activation, seed)
    return dead_fractions(net, val_x[:PROBE_SIZE])


def train_one(data: ArrayData, preprocessing: str, activation: str, seed: int, epochs: int) -> dict:
    """Train one ExcitationNet; per-epoch train/val accuracy and dead-unit fractions."""
    net, train_x, val_x = _initial(data, preprocessing, activation, seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    shuffle = torch.Generator().manual_seed(seed)
    probe = val_x[:PROBE_SIZE]
    curves = {"train_acc": [], "val_acc": [], "train_loss": [], "dead_relu": [], "dead_gradient": []}
    n = train_x.shape[0]
    started = time.perf_counter()
    for _epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=shuffle)
        correct, loss_sum = 0, 0.0
        for start in range(0, n, BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            logits = net(train_x[idx])
            loss = F.cross_entropy(logits, data.train_y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            correct += int((logits.argmax(1) == data.train_y[idx]).sum())
            loss_sum += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            val_correct = sum(int((net(val_x[s:s + 1024]).argmax(1) == data.val_y[s:s + 1024]).sum())
                              for s in range(0, val_x.shape[0], 1024))
        dead_relu, dead_gradient = dead_fractions(net, probe)
        curves["train_acc"].append(correct / n)
        curves["val_acc"].append(val_correct / val_x.shape[0])
        curves["train_loss"].append(loss_sum / n)
        curves["dead_relu"].append(dead_relu)
        curves["dead_gradient"].append(dead_gradient)
    curves = {k: [round(v, 6) for v in values] for k, values in curves.items()}
    return {**curves, "time_s": round(time.perf_counter() - started, 3),
            "hidden_units": net.attn.hidden, "n_train": n, "n_val": int(val_x.shape[0])}


# ---------------------------------------------------------------------------------------------
# the study


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None) -> os.PathLike:
    """Run the study at ``budget`` and write ``out_dir/activations/report.json`` (returned)."""
    plan = BUDGETS[check_budget(budget)]
    progress = progress or _no_progress
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the network is tiny: one thread does more work per CPU-second than two
    try:
        return _run(plan, budget, out_dir, progress)
    finally:
        torch.set_num_threads(threads)


def _run(plan: ActivationsBudget, budget: str, out_dir, progress: Progress):
    from attnviz.experiments.activations_report import write_report  # it imports this module

    study = StudyRun(STUDY, TITLE, budget, out_dir, progress)
    if budget == "tiny" and "mnist" not in plan.datasets:
        study.notes.append("MNIST is not attempted at the tiny budget.")
    datasets: dict[str, ArrayData] = {}
    for name in plan.datasets:
        data = load_study_data(name, plan.per_class.get(name), study.notes)
        if data is not None:
            datasets[name] = data
    cells = [(d, p, a) for d in datasets for p in PREPROCESSINGS for a in plan.activations]
    total = len(cells) * plan.runs
    runs: dict[tuple[str, str, str], list[dict]] = {}
    done = 0
    for dataset_name, preprocessing, activation in cells:
        data = datasets[dataset_name]
        for seed in range(plan.runs):
            key = f"{dataset_name}-{preprocessing}-{activation}-seed{seed}"
            progress(done, total, key)
            config = {"data": data.source, "n_train": int(data.train_y.numel()), "n_val": int(data.val_y.numel()),
                      "preprocessing": preprocessing, "activation": activation, "seed": seed,
                      "epochs": plan.epochs[dataset_name], "filters": FILTERS, "reduction": REDUCTION,
                      "batch_size": BATCH_SIZE, "lr": LEARNING_RATE, "optimizer": "adam"}
            result = study.units.run(key, config, lambda data=data, p=preprocessing, a=activation, s=seed,
                                     e=plan.epochs[dataset_name]: train_one(data, p, a, s, e))
            runs.setdefault((dataset_name, preprocessing, activation), []).append(result)
            done += 1
    progress(done, total, "writing the report")
    return write_report(study, plan, datasets, runs)
