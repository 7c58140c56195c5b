"""What a training run is asked to do: the :class:`Recipe`, its learning-rate schedule and its precision.

Schedules (the learning rate is a pure function of the global step, nothing to save):
``onecycle`` (Smith & Topin 2018, the linear variant): lr rises linearly from lr/25 to lr over the first
``warmup_fraction`` of the steps, then falls linearly to 0; momentum is not cycled (kept at
``momentum``). ``cosine`` (Loshchilov & Hutter 2017, no restarts): lr * (1 + cos(pi t / T)) / 2. ``T`` is the main
schedule's steps (``epochs``); the optional weight-averaging phase after it (``average_epochs``,
:mod:`attnviz.training.averaging`) is not part of ``T``: its lr is ``average_lr`` throughout
(``average_schedule="constant"``) or, with ``"cyclic"`` (Izmailov et al. 2018, eq. 2), falls linearly
within every epoch from ``average_lr`` to ``average_lr / 100``, the snapshot being taken at the low end.

Precision (``Recipe.precision``/``memory_format``, resolved by :func:`resolve_precision`): ``auto`` =
bf16 autocast on CUDA and on a CPU with native bf16 kernels (AVX512-BF16/AMX), else float32;
channels_last on CUDA and on the CPU except, under bf16 on a CPU, for a model holding a module that
declares ``channels_last_on_cpu_bf16 = False`` (LGAM, CBAM, SGE; ``benchmarks/trainer_throughput.py`` prints both
formats).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnviz.errors import AttnvizError

OPTIMIZERS = ("sgd", "nesterov")
SCHEDULES = ("onecycle", "cosine")
AVERAGE_SCHEDULES = ("constant", "cyclic")
CYCLE_LOW = 0.01  # cyclic averaging: the lr at a cycle's end, as a fraction of average_lr
PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")

Callback = Callable[[dict], None]


@dataclass
class Recipe:
    """How to train. ``lr=None`` means 0.2 x batch_size / 256 (the linear scaling rule)."""

    epochs: int = 15
    batch_size: int = 256
    lr: float | None = None
    optimizer: str = "nesterov"  # sgd (heavy-ball momentum) | nesterov
    momentum: float = 0.9
    schedule: str = "onecycle"  # onecycle | cosine
    warmup_fraction: float = 0.25  # onecycle only
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    augment: bool = True
    interflow_aux_weight: float | None = None  # None: the spec's aux_weight (default 0)
    # Interflow's learned aggregation weights multiply every branch's logits, so one step on them
    # rescales the whole output; at the backbone's peak lr (0.4 in the zoo) they collapsed to ~0 in
    # the first epoch and took every gradient with them (resnet20-interflow-soft: 18.5% after 3
    # epochs). They train at this fraction of the lr (1.0 restores one lr for all parameters).
    interflow_weight_lr_scale: float = 0.1
    # auto: bf16 autocast on CUDA and on a CPU with native bf16 (AVX512-BF16/AMX), float32 otherwise.
    # BatchNorm, the loss and the optimizer stay float32 (autocast's own op lists decide per op).
    # Stochastic weight averaging after the main schedule (attnviz.training.averaging): this many more
    # epochs at average_lr (None: a quarter of the peak lr), constant or cyclic, one snapshot per epoch.
    average_epochs: int = 0
    average_lr: float | None = None
    average_schedule: str = "constant"  # constant | cyclic (one cycle per epoch)
    precision: str = "auto"  # auto | fp32 | bf16
    memory_format: str = "auto"  # auto | contiguous | channels_last (auto: see resolve_precision)
    compile: bool = False
    deterministic: bool = False  # CUDA only: deterministic kernels
    probe_size: int = 256
    step_event_every: int = 10

    @property
    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else 0.2 * self.batch_size / 256

    @property
    def resolved_average_lr(self) -> float:
        return float(self.average_lr) if self.average_lr is not None else 0.25 * self.resolved_lr

    @property
    def total_epochs(self) -> int:
        """The main schedule's epochs plus the weight-averaging phase's."""
        return self.epochs + self.average_epochs

    def validate(self) -> None:
        problems = []
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000):
            problems.append("epochs must be an integer from 1 to 10000")
        if not (isinstance(self.average_epochs, int) and 0 <= self.average_epochs <= 10_000):
            problems.append("average_epochs must be an integer from 0 to 10000")
        if self.average_lr is not None and not (math.isfinite(self.average_lr) and self.average_lr > 0):
            problems.append("average_lr must be a positive number")
        if self.average_schedule not in AVERAGE_SCHEDULES:
            problems.append(f"average_schedule must be one of {', '.join(AVERAGE_SCHEDULES)}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65_536):
            problems.append("batch_size must be an integer from 1 to 65536")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            problems.append("lr must be a positive number")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
        if not 0 <= self.momentum < 1:
            problems.append("momentum must be in [0, 1)")
        if not 0 <= self.warmup_fraction < 1:
            problems.append("warmup_fraction must be in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append("weight_decay must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            problems.append("label_smoothing must be in [0, 1)")
        if self.interflow_aux_weight is not None and not self.interflow_aux_weight >= 0:
            problems.append("interflow_aux_weight must be >= 0")
        if not (math.isfinite(self.interflow_weight_lr_scale) and 0 < self.interflow_weight_lr_scale <= 10):
            problems.append("interflow_weight_lr_scale must be in (0, 10]")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.memory_format not in MEMORY_FORMATS:
            problems.append(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            problems.append("seed must be a non-negative integer")
        if problems:
            raise AttnvizError(f"Bad training recipe: {'; '.join(problems)}.")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["lr"] = self.resolved_lr
        if self.average_epochs:
            out["average_lr"] = self.resolved_average_lr
        else:  # no averaging phase: the card reads as it did before the phase existed
            for key in ("average_epochs", "average_lr", "average_schedule"):
                out.pop(key)
        return out

    def to_state(self) -> dict:
        """The recipe as a resume state keeps it: lr and average_lr as given (None stays None, so a
        resumed run resolves them exactly as the first process did)."""
        return self.to_dict() | {"lr": self.lr} | ({"average_lr": self.average_lr} if self.average_epochs else {})

    def same_main_schedule(self, other: Recipe) -> bool:
        """Equal in everything but the weight-averaging phase."""
        def main(recipe: Recipe) -> dict:
            return {k: v for k, v in recipe.to_dict().items() if not k.startswith("average_")}
        return main(self) == main(other)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AttnvizError(f"Unknown recipe field(s): {', '.join(unknown)}.")
        return cls(**values)


@dataclass
class TrainResult:
    checkpoint: Path  # the model card (.json)
    card: dict
    history: list[dict] = field(default_factory=list)
    status: str = "complete"




def lr_at(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based); ``total_steps`` is the main schedule's length.

    Steps past it belong to the weight-averaging phase: ``average_lr``, constant or in one-epoch cycles.
    """
    if step >= total_steps and recipe.average_epochs:
        high = recipe.resolved_average_lr
        if recipe.average_schedule == "constant":
            return high
        steps_per_epoch = max(total_steps // recipe.epochs, 1)
        position = ((step - total_steps) % steps_per_epoch) / max(steps_per_epoch - 1, 1)
        return high * (1.0 - (1.0 - CYCLE_LOW) * position)
    peak = recipe.resolved_lr
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if recipe.schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    warm = recipe.warmup_fraction
    if warm > 0 and progress < warm:
        return peak * (0.04 + 0.96 * progress / warm)
    return peak * (1.0 - progress) / (1.0 - warm) if warm < 1 else peak


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 matrix and convolution kernels natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(recipe: Recipe, device: torch.device, model: nn.Module) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None for float32, channels_last)`` for training ``model`` on ``device``."""
    if recipe.precision == "bf16":
        dtype = torch.bfloat16
    elif recipe.precision == "fp32":
        dtype = None
    else:
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16())
        dtype = torch.bfloat16 if fast else None
    if recipe.memory_format == "auto":
        # a module declares when channels_last is slower for it under bf16 on a CPU (LGAM, CBAM, SGE)
        slower = device.type == "cpu" and dtype is not None and any(
            not getattr(module, "channels_last_on_cpu_bf16", True) for module in model.modules())
        channels_last = device.type in ("cuda", "cpu") and not slower
    else:
        channels_last = recipe.memory_format == "channels_last"
    return dtype, channels_last


def precision_label(dtype: torch.dtype | None, channels_last: bool) -> str:
    return f"{'bf16 autocast' if dtype == torch.bfloat16 else 'float32'}, {'channels_last' if channels_last else 'contiguous'}"


def precision_over_epochs(history: list[dict], current: str) -> str:
    """The card's ``training_precision``: one label, or each label with its epochs when they differ.

    ``auto`` resolves on the machine that runs each (resumed) part of a run, so a run resumed on a CPU
    without native bf16 continues in float32; epochs whose entry predates per-epoch recording say so.
    """
    spans: list[list] = []  # [label, first epoch, last epoch]
    for entry in history:
        label = entry.get("precision", "not recorded")
        if spans and spans[-1][0] == label:
            spans[-1][2] = entry["epoch"]
        else:
            spans.append([label, entry["epoch"], entry["epoch"]])
    if not spans:
        return current
    if len(spans) == 1 and spans[0][0] != "not recorded":
        return spans[0][0]
    return "; ".join(f"{label} (epoch{'s' if first != last else ''} "
                     f"{first}{f'-{last}' if first != last else ''})" for label, first, last in spans)
