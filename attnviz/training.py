"""The one trainer used by the CLI, the app and the zoo: spec + dataset + recipe -> checkpoint.

``train(model, data, recipe, out_dir, name, *, callback, cancel_event, device, resume) -> TrainResult``

- ``model``: a spec string (built with ``create_model(spec, data.num_classes, data.in_chans)`` after
  seeding) or a zoo ``nn.Module`` (it must have ``spec``; its weights are the starting point).
- ``data``: a dataset name for :func:`attnviz.data.load_dataset` or an :class:`ImageDataset`.
- ``recipe``: a :class:`Recipe` (or a dict of its fields); ``None`` = the defaults.
- Writes ``out_dir/NAME.safetensors`` + ``NAME.json`` (the model card) after every epoch, on cancel
  and at the end, and ``NAME.trainstate`` (safetensors: weights, optimizer buffers; the position and
  history as JSON metadata; never pickle) while a run is unfinished, so ``resume=True`` continues it.
- Returns :class:`TrainResult`; raises ``TrainingCancelled`` (consistent checkpoint kept, ``.checkpoint``),
  ``TrainingDiverged`` (loss not finite: stopped within one step, the last good checkpoint kept and its
  card marked with the reason) or ``TrainingError`` (e.g. the disk is full).

Speed
- All images stay in memory as uint8 (on CUDA: on the GPU); each step gathers its batch by index,
  augments it with batched tensor ops (random crop from a 4-pixel zero padding + horizontal flip, per
  image; as torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``), normalises it and
  runs the model. No DataLoader, no worker processes.
- Precision (``Recipe.precision``/``memory_format``, resolved by :func:`resolve_precision`): ``auto`` =
  bf16 autocast on CUDA and on a CPU with native bf16 kernels (AVX512-BF16/AMX), else float32;
  channels_last on CUDA and on the CPU except, under bf16 on a CPU, the kinds in
  ``CONTIGUOUS_ON_CPU_BF16`` (measured slower).
  The card records it as ``training_precision``; its final ``metrics`` are always float32.
- CPU: ``torch.set_num_threads`` = the cores this process may use (divided among DDP ranks).
- CUDA: ``cudnn.benchmark``, optional ``torch.compile``; the non-finite
  check reads the previous step's loss, so the GPU queue never drains (still within one step).

Determinism: the shuffle of epoch ``e`` comes from a generator seeded by ``(seed, e)`` and the
augmentation of step ``s`` from one seeded by ``(seed, e, s, rank)``, so a run is a pure function of
its seed (identical weights on CPU for the same seed), and a resumed run continues exactly where it
stopped. On CUDA, set ``Recipe.deterministic`` for bitwise repeatability (slower kernels).

Schedules (the learning rate is a pure function of the global step, nothing to save):
``onecycle`` (Smith & Topin 2018, the linear variant): lr rises linearly from lr/25 to lr over the first
``warmup_fraction`` of the steps, then falls linearly to 0; momentum is not cycled (kept at
``momentum``). ``cosine`` (Loshchilov & Hutter 2017, no restarts): lr * (1 + cos(pi t / T)) / 2.
Weight decay applies to weight matrices and kernels only (not to BN/bias vectors, nor to Interflow's
aggregation weights), following Goyal et al. 2017.

Metrics: per epoch, the test split is evaluated on the training device (monitoring). The final card's
``metrics`` are measured by :func:`evaluate` exactly as ``attnviz eval`` measures them: on the CPU, in
float32, on a contiguous copy of the saved weights, batches of ``EVAL_BATCH``, so the two agree exactly.

Attention statistics (per epoch, on a fixed probe batch = the first ``probe_size`` test images):
the fraction of dead SE excitation units (hidden units whose pre-activation, read at ``tap_hidden``, is
<= 0 for every probe image; FeLU paper), the mean channel weight of every SE/ECA/CBAM site
(``tap_channel``) and Interflow's branch weights. See :func:`attention_statistics`.

Events go to ``callback(dict)``: ``{"event": "start"|"step"|"epoch"|"checkpoint"|"end"|"error", ...}``
with ``loss``, ``train_acc``, ``test_acc``, ``lr``, ``images_per_s``, ``eta_s`` and, per epoch,
``attention``. Only rank 0 emits events under DDP.

Pause: suspend the process with SIGTSTP (Ctrl-Z, or ``kill -TSTP PID``) and continue it with SIGCONT;
the suspended time is left out of every recorded duration (a plain SIGSTOP cannot be seen and counts).

Cancel: ``cancel_event`` (a ``threading.Event``) set from any thread, or a file named ``CANCEL`` in
``out_dir`` (create it from another process), is seen at the next step. The CLI maps SIGINT/SIGTERM
to the event.

DDP: under ``torchrun`` (``WORLD_SIZE`` > 1) the trainer joins the process group (gloo on CPU, NCCL on
CUDA), ``batch_size`` is the global batch (each rank gets ``batch_size / world``: the shared shuffle's
``rank::world`` shard), and only rank 0 evaluates, writes checkpoints and emits events.

Fault injection (tests and drills): ``ATTNVIZ_FAULT_NAN_AT_STEP=N`` makes the loss of global step N
non-finite, to exercise the divergence path end to end.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.data import ImageDataset, load_dataset, match_channels, portable_dataset_name, preprocess
from attnviz.errors import (
    AttnvizError,
    CheckpointError,
    TrainingCancelled,
    TrainingDiverged,
    TrainingError,
)

EVAL_BATCH = 500
STATE_FORMAT = 1
CANCEL_FILE = "CANCEL"
OPTIMIZERS = ("sgd", "nesterov")
SCHEDULES = ("onecycle", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
# Attention kinds whose training step is slower in channels_last under bf16 autocast on a CPU (issue 11,
# an AVX512-BF16 machine: resnet20-lgam 722 img/s contiguous vs 539 channels_last; its per-group
# slicing and channel reductions force layout copies). In float32 channels_last was faster for every
# kind on the 2-core AVX2 build machine (benchmarks/trainer_throughput.py prints both formats).
# ``memory_format="auto"`` keeps these contiguous only for bf16 on a CPU; channels_last otherwise.
CONTIGUOUS_ON_CPU_BF16 = ("lgam",)

Callback = Callable[[dict], None]

# Time while the process is suspended (SIGTSTP: Ctrl-Z in a terminal, or a scheduler making room) is not
# training time: every duration the trainer records (epoch times, train_time_s, images/s, ETAs) comes
# from _clock(), which leaves it out. Installed by train() when it runs in the main thread.
_suspended_s = 0.0


def _clock() -> float:
    return time.perf_counter() - _suspended_s


def _on_suspend(signum, _frame) -> None:
    """SIGTSTP: stop for real (the default action), then count how long the process stood still."""
    import signal

    global _suspended_s
    stopped = time.perf_counter()
    previous = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once the process is continued (SIGCONT)
    finally:
        _suspended_s += time.perf_counter() - stopped
        signal.signal(signal.SIGTSTP, previous)


def _install_suspend_clock() -> None:
    import signal

    if (hasattr(signal, "SIGTSTP") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTSTP) in (signal.SIG_DFL, None)):
        signal.signal(signal.SIGTSTP, _on_suspend)


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
    precision: str = "auto"  # auto | fp32 | bf16
    memory_format: str = "auto"  # auto | contiguous | channels_last (auto: see CONTIGUOUS_ON_CPU_BF16)
    compile: bool = False
    deterministic: bool = False  # CUDA only: deterministic kernels
    probe_size: int = 256
    step_event_every: int = 10

    @property
    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else 0.2 * self.batch_size / 256

    def validate(self) -> None:
        problems = []
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000):
            problems.append("epochs must be an integer from 1 to 10000")
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
        return out

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


# ---------------------------------------------------------------------------------------------
# small pieces, public because the benchmark, the CLI and the tests use them


def lr_at(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based) of ``total_steps``."""
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
        kinds = {getattr(module, "attn_kind", None) for module in model.modules()}
        slower = device.type == "cpu" and dtype is not None and kinds & set(CONTIGUOUS_ON_CPU_BF16)
        channels_last = device.type in ("cuda", "cpu") and not slower
    else:
        channels_last = recipe.memory_format == "channels_last"
    return dtype, channels_last


def precision_label(dtype: torch.dtype | None, channels_last: bool) -> str:
    return f"{'bf16 autocast' if dtype == torch.bfloat16 else 'float32'}, {'channels_last' if channels_last else 'contiguous'}"


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop from a zero padding of ``padding`` pixels + random horizontal flip, per image.

    ``images``: uint8 ``[B, C, H, W]`` on any device; ``generator`` on the same device.
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=device)
    flips = torch.rand(batch, generator=generator, device=device) < 0.5
    rows = offsets[:, 0:1] + torch.arange(height, device=device)  # [B, H]
    cols = offsets[:, 1:2] + torch.arange(width, device=device)  # [B, W]
    # a flipped image reads its columns right to left
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=device)[:, None, None, None]
    channel_index = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


def _mixed_seed(*parts: int) -> int:
    digest = hashlib.blake2b(",".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _criterion(label_smoothing: float):
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean,
    std,
    *,
    num_classes: int | None = None,
    batch_size: int = EVAL_BATCH,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict:
    """Accuracy, loss (plain cross-entropy, no smoothing), per-class accuracy and n on ``images``.

    The model is put in eval mode for the call and restored afterwards. With the defaults (CPU,
    float32, batches of ``EVAL_BATCH``) this is exactly what ``attnviz eval`` runs.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_classes = num_classes or int(getattr(model, "num_classes", int(labels.max()) + 1))
    was_training = model.training
    model.eval()
    correct_per_class = torch.zeros(num_classes, dtype=torch.int64)
    count_per_class = torch.zeros(num_classes, dtype=torch.int64)
    loss_sum = 0.0
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = preprocess(images[start : start + batch_size].to(device), mean, std)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            target = labels[start : start + batch_size].to(device)
            ctx = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                logits = model(batch)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            hits = (logits.argmax(dim=1) == target).cpu()
            target_cpu = target.cpu()
            count_per_class += torch.bincount(target_cpu, minlength=num_classes)
            correct_per_class += torch.bincount(target_cpu[hits], minlength=num_classes)
    finally:
        model.train(was_training)
    n = int(count_per_class.sum())
    per_class = [
        (float(c) / float(t) if t > 0 else None)
        for c, t in zip(correct_per_class.tolist(), count_per_class.tolist(), strict=True)
    ]
    return {
        "test_acc": float(correct_per_class.sum()) / n if n else 0.0,
        "test_loss": loss_sum / n if n else 0.0,
        "n_test": n,
        "correct": int(correct_per_class.sum()),
        "per_class_acc": per_class,
    }


@torch.no_grad()
def attention_statistics(model: nn.Module, probe_batch: torch.Tensor) -> dict:
    """Attention statistics on a fixed, already preprocessed probe batch.

    Returns ``{"dead_fraction": {site: f}, "dead_fraction_total": f | None,
    "channel_weight_mean": {site: m}, "interflow_branch_weights": list | None}``. Hooks live only
    for this call (registered in ``try``, removed in ``finally``) under the model's lock.
    """
    from attnviz.layers.taps import AttentionModule
    from attnviz.locks import model_lock

    hidden_seen: dict[str, torch.Tensor] = {}
    channel_seen: dict[str, torch.Tensor] = {}
    branch_weights = None
    handles = []

    def keep_into(store: dict, site: str):
        def hook(_module, _inputs, output):
            store[site] = output.detach().float()

        return hook

    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            for site, module in model.named_modules():
                if not isinstance(module, AttentionModule):
                    continue
                kind = getattr(module, "attn_kind", "")
                if hasattr(module, "tap_hidden"):
                    handles.append(module.tap_hidden.register_forward_hook(keep_into(hidden_seen, site)))
                if kind in ("se", "eca", "cbam") and hasattr(module, "tap_channel"):
                    handles.append(module.tap_channel.register_forward_hook(keep_into(channel_seen, site)))
                if hasattr(module, "tap_branch_weights"):
                    handles.append(
                        module.tap_branch_weights.register_forward_hook(keep_into(channel_seen, "__interflow__"))
                    )
            model(probe_batch)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
    interflow = channel_seen.pop("__interflow__", None)
    if interflow is not None:
        branch_weights = [round(v, 6) for v in interflow.cpu().flatten().tolist()]
        if interflow.dim() == 2:
            branch_weights = [[round(v, 6) for v in row] for row in interflow.cpu().tolist()]
    dead = {}
    dead_units = total_units = 0
    for site, hidden in hidden_seen.items():
        units_dead = int((hidden <= 0).all(dim=0).sum())
        dead[site] = units_dead / hidden.shape[1]
        dead_units += units_dead
        total_units += hidden.shape[1]
    return {
        "dead_fraction": dead,
        "dead_fraction_total": (dead_units / total_units) if total_units else None,
        "channel_weight_mean": {site: round(float(w.mean()), 6) for site, w in channel_seen.items()},
        "interflow_branch_weights": branch_weights,
    }


# ---------------------------------------------------------------------------------------------
# state files (safetensors + JSON metadata; never pickle)


def _state_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.trainstate"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu").contiguous().clone()
    return tensors


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("optim/"):
            continue
        _, index, name = key.split("/", 2)
        restored.setdefault(int(index), {})[name] = value
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)


def _write_state(path: Path, net: nn.Module, optimizer, meta: dict) -> None:
    from safetensors.torch import save

    from attnviz.checkpoints import atomic_write_bytes, state_dict_for_saving

    tensors = {f"model/{k}": v for k, v in state_dict_for_saving(net).items()}
    tensors.update(_optimizer_tensors(optimizer))
    payload = save(tensors, metadata={"attnviz_state": json.dumps(meta, allow_nan=True)})
    atomic_write_bytes(path, payload)


def _read_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

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


# ---------------------------------------------------------------------------------------------
# the trainer


class _WithBranches(nn.Module):
    """Forward returning (logits, branch logits) so DDP sees Interflow's auxiliary outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_with_branches(x)


def default_name(spec: str) -> str:
    """A checkpoint name from a spec: ``vgg16-interflow-soft:width=0.25`` -> ``vgg16-interflow-soft_width0.25``."""
    cleaned = spec.replace(":", "_").replace("=", "").replace(",", "_").replace("@", "_at_").replace("/", "-")
    return "".join(c for c in cleaned if c.isalnum() or c in "-_.").strip(".") or "model"


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Stop(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def train(
    model: str | nn.Module,
    data: str | ImageDataset,
    recipe: Recipe | dict | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    *,
    callback: Callback | None = None,
    cancel_event: threading.Event | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``recipe`` and write the checkpoint to ``out_dir/name``.

    ``out_dir`` defaults to ``~/.attnviz/runs``; ``name`` to a cleaned-up spec. See the module
    docstring for events, cancel, divergence, resume and DDP.
    """
    import torch.distributed as dist

    from attnviz.checkpoints import runs_dir
    from attnviz.device import describe_device, pick_device

    if isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    recipe = dataclasses.replace(recipe) if recipe is not None else Recipe()
    recipe.validate()

    device = pick_device(device)
    _install_suspend_clock()
    if recipe.precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise AttnvizError("precision 'bf16' was asked for, but this CPU has no native bf16 kernels "
                           "(emulated bf16 is about 10x slower); use 'auto' or 'fp32'.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    rank = dist.get_rank() if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, _available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))))
        emit = callback if (callback is not None and rank == 0) else (lambda event: None)
        run = _Run(model, data, recipe, out_dir or runs_dir(), name, emit, cancel_event, device,
                   describe_device(device), resume, world, rank)
        return run.execute()
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    """One training run; ``execute`` is the loop. Split out of ``train`` to keep each step readable."""

    def __init__(self, model, data, recipe: Recipe, out_dir, name, emit, cancel_event, device, device_label,
                 resume, world, rank):
        from attnviz.models.registry import create_model

        self.recipe = recipe
        self.emit = emit
        self.cancel_event = cancel_event
        self.device = device
        self.device_label = device_label
        self.world = world
        self.rank = rank
        self.data = load_dataset(data) if isinstance(data, str) else data
        if not isinstance(self.data, ImageDataset):
            raise AttnvizError("data must be a dataset name or an attnviz.data.ImageDataset.")
        if isinstance(model, str):
            torch.manual_seed(recipe.seed)  # model initialisation is part of the seeded run
            self.net = create_model(model, num_classes=self.data.num_classes, in_chans=self.data.in_chans)
        elif isinstance(model, nn.Module):
            if not getattr(model, "spec", None):
                raise AttnvizError("The model has no 'spec'; build it with attnviz.create_model so it can be saved.")
            if getattr(model, "num_classes", self.data.num_classes) != self.data.num_classes:
                raise AttnvizError(
                    f"The model predicts {model.num_classes} classes but the dataset has {self.data.num_classes}."
                )
            self.net = model
        else:
            raise AttnvizError("model must be a spec string or an attnviz model.")
        self.in_chans = int(getattr(self.net, "in_chans", self.data.in_chans))
        self.spec = str(self.net.spec)
        self.name = name or default_name(self.spec)
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise AttnvizError(f"'{self.name}' is not a valid run name (no slashes, not hidden).")
        self.out_dir = Path(out_dir)
        self.state_path = _state_path(self.out_dir, self.name)
        self.cancel_file = self.out_dir / CANCEL_FILE
        self.resume = resume
        self.history: list[dict] = []
        self.checkpoint_path: Path | None = None
        self.fault_step = int(os.environ.get("ATTNVIZ_FAULT_NAN_AT_STEP", "0") or 0)

    # ------------------------------------------------------------------------- setup helpers
    def _prepare_data(self):
        data = self.data
        train_x = match_channels(data.train_images, self.in_chans)
        test_x = match_channels(data.test_images, self.in_chans)
        mean, std = data.mean, data.std
        if len(mean) != self.in_chans:  # statistics follow the channel conversion
            from attnviz.data import channel_stats

            mean, std = channel_stats(train_x)
        self.mean, self.std = tuple(mean), tuple(std)
        keep_on_device = self.device.type == "cuda"
        self.train_x = train_x.to(self.device) if keep_on_device else train_x
        self.train_y = data.train_labels.to(self.device) if keep_on_device else data.train_labels
        self.test_x = test_x
        self.test_y = data.test_labels
        probe = test_x[: self.recipe.probe_size]
        self.probe_batch = preprocess(probe.to(self.device), self.mean, self.std)
        if self.channels_last:
            self.probe_batch = self.probe_batch.contiguous(memory_format=torch.channels_last)

    def _build_optimizer(self):
        decay, no_decay, aggregation = [], [], []
        for param_name, param in self.net.named_parameters():
            if not param.requires_grad:
                continue
            if param_name.endswith("branch_weights"):
                aggregation.append(param)
            elif param.ndim <= 1:
                no_decay.append(param)
            else:
                decay.append(param)
        # lr_scale: the schedule's lr is multiplied by it for that group (see the training loop).
        groups = [{"params": decay, "weight_decay": self.recipe.weight_decay, "lr_scale": 1.0}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0})
        if aggregation:
            groups.append({"params": aggregation, "weight_decay": 0.0,
                           "lr_scale": self.recipe.interflow_weight_lr_scale})
        return torch.optim.SGD(groups, lr=self.recipe.resolved_lr, momentum=self.recipe.momentum,
                               nesterov=self.recipe.optimizer == "nesterov" and self.recipe.momentum > 0)

    def _card(self, status: str, metrics: dict, epochs_done: float) -> dict:
        from attnviz import __version__
        from attnviz.stats import count_flops

        if not hasattr(self, "_flops"):
            net_cpu = copy.deepcopy(self.net).to("cpu").float()
            self._flops = count_flops(net_cpu, (self.in_chans, *self.data.input_size))
        card = self.data.card_fields()
        card.update({
            "name": self.name,
            "spec": self.spec,
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
            "metrics": metrics,
            "recipe": self.recipe.to_dict(),
            "seed": self.recipe.seed,
            "attnviz_version": __version__,
            "flops": self._flops,
            "train_time_s": round(self.train_time, 2),
            "device": self.device_label + (f" x{self.world} (DDP)" if self.world > 1 else ""),
            "training_precision": precision_label(self.autocast_dtype, self.channels_last),
            "torch_version": torch.__version__,
            "status": status,
            "epochs_done": epochs_done,
            "n_train": self.data.n_train,
            "history": self.history,
        })
        return card

    def _final_metrics(self) -> dict:
        """Measure like ``attnviz eval``: CPU, float32, contiguous copy of the weights."""
        from attnviz.checkpoints import state_dict_for_saving
        from attnviz.models.registry import create_model

        clone = create_model(self.spec, num_classes=self.data.num_classes, in_chans=self.in_chans)
        clone.load_state_dict(state_dict_for_saving(self.net))
        metrics = evaluate(clone, self.test_x, self.test_y, self.mean, self.std,
                           num_classes=self.data.num_classes, device="cpu")
        metrics["measured_by"] = f"attnviz eval (cpu, float32, batch {EVAL_BATCH})"
        return metrics

    def _save(self, status: str, metrics: dict, epochs_done: float, position: tuple[int, int] | None) -> Path:
        """Write the checkpoint (card last), then the resume state; rank 0 only."""
        from attnviz.checkpoints import save_checkpoint

        try:
            card_path = save_checkpoint(self.net, self.out_dir, self.name, self._card(status, metrics, epochs_done))
            if position is not None:
                meta = {
                    "format": STATE_FORMAT, "name": self.name, "spec": self.spec, "dataset": self.data.name,
                    "recipe": self.recipe.to_dict() | {"lr": self.recipe.lr}, "epoch": position[0],
                    "step": position[1], "world_size": self.world, "history": self.history,
                    "train_time_s": self.train_time, "mean": list(self.mean), "std": list(self.std),
                }
                _write_state(self.state_path, self.net, self.optimizer, meta)
        except CheckpointError as err:
            raise TrainingError(f"{err} Training stopped; the previous checkpoint was kept.") from err
        self.checkpoint_path = card_path
        self.emit({"event": "checkpoint", "path": str(card_path), "status": status, "epochs_done": epochs_done})
        return card_path

    def _mark_diverged(self, reason: str) -> None:
        """Record the reason in the last good checkpoint's card without touching its weights."""
        from attnviz.checkpoints import atomic_write_bytes, read_card

        card_path = self.out_dir / f"{self.name}.json"
        if not card_path.exists():
            return
        try:
            card = read_card(card_path)
            card["status"] = "diverged"
            card["stopped_reason"] = reason
            atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
        except (CheckpointError, OSError, ValueError):
            pass  # the weights and their card stay as they were

    def _should_cancel(self) -> bool:
        return bool((self.cancel_event is not None and self.cancel_event.is_set()) or self.cancel_file.exists())

    # ------------------------------------------------------------------------------ the run
    def execute(self) -> TrainResult:
        import torch.distributed as dist

        recipe = self.recipe
        cuda = self.device.type == "cuda"
        start_epoch, start_step, self.train_time = 0, 0, 0.0
        state_tensors = None
        if self.resume:
            if self.state_path.exists():
                meta, state_tensors = _read_state(self.state_path)
                if meta["spec"] != self.spec:
                    raise TrainingError(f"{self.state_path.name} belongs to '{meta['spec']}', not '{self.spec}'.")
                saved_recipe = dict(meta["recipe"])
                self.recipe = recipe = Recipe.from_dict(saved_recipe)
                start_epoch, start_step = int(meta["epoch"]), int(meta["step"])
                if start_step and int(meta.get("world_size", 1)) != self.world:
                    raise TrainingError("This run stopped mid-epoch with a different number of processes; "
                                        "resume it with the same number.")
                self.history = list(meta.get("history") or [])
                self.train_time = float(meta.get("train_time_s", 0.0))
            else:
                finished = self._finished_card()
                if finished is not None:
                    card_path, card = finished
                    self.emit({"event": "end", "status": "complete", "checkpoint": str(card_path),
                               "test_acc": card["metrics"]["test_acc"], "skipped": True})
                    return TrainResult(card_path, card, list(card.get("history") or []), "complete")

        self.autocast_dtype, self.channels_last = resolve_precision(recipe, self.device, self.net)
        if cuda:
            torch.backends.cudnn.benchmark = not recipe.deterministic
            if recipe.deterministic:
                torch.backends.cudnn.deterministic = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._prepare_data()
        if state_tensors is not None:
            self.net.load_state_dict({k[len("model/"):]: v for k, v in state_tensors.items() if k.startswith("model/")})
        self.net.to(self.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = self._build_optimizer()
        if state_tensors is not None:
            _load_optimizer(self.optimizer, state_tensors)
            del state_tensors

        aux_weight = recipe.interflow_aux_weight
        head = getattr(self.net, "head", None)
        if aux_weight is not None and head is not None and hasattr(head, "aux_weight"):
            head.aux_weight = float(aux_weight)
        use_branches = bool(getattr(self.net, "is_interflow", False) and getattr(head, "aux_weight", 0) > 0)
        forward_module: nn.Module = _WithBranches(self.net) if use_branches else self.net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward_module = DistributedDataParallel(
                forward_module, device_ids=[self.device.index] if cuda else None)
        if recipe.compile:
            forward_module = torch.compile(forward_module)
        criterion = _criterion(recipe.label_smoothing)
        autocast = ((lambda: torch.autocast(self.device.type, dtype=self.autocast_dtype))
                    if self.autocast_dtype is not None else contextlib.nullcontext)

        n_train = self.train_x.shape[0]
        if recipe.batch_size % self.world:
            raise AttnvizError(f"batch_size {recipe.batch_size} must be divisible by the {self.world} processes.")
        per_rank_total = n_train // self.world
        if per_rank_total < 1:
            raise AttnvizError("The training split is smaller than the number of processes.")
        local_batch = min(recipe.batch_size // self.world, per_rank_total)
        steps_per_epoch = max(1, per_rank_total // local_batch)  # the last partial batch is dropped
        total_steps = recipe.epochs * steps_per_epoch
        global_batch = local_batch * self.world
        if start_epoch >= recipe.epochs:
            start_epoch, start_step = recipe.epochs, 0

        from attnviz.stats import count_params

        self.emit({
            "event": "start", "name": self.name, "spec": self.spec, "dataset": self.data.name,
            "n_train": n_train, "n_test": int(self.test_y.shape[0]), "num_classes": self.data.num_classes,
            "epochs": recipe.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": global_batch,
            "device": self.device_label, "world_size": self.world, "params": count_params(self.net),
            "recipe": recipe.to_dict(), "resumed_at": [start_epoch, start_step] if self.resume else None,
            "out_dir": str(self.out_dir),
        })
        generator = torch.Generator(device=self.device)
        shuffle_generator = torch.Generator(device=self.device)
        run_started = _clock()
        time_at_start = self.train_time
        steps_done_here = 0
        epoch = start_epoch
        step = start_step
        pending_loss = None  # CUDA: the previous step's loss, checked one step late
        try:
            for epoch in range(start_epoch, recipe.epochs):
                self.net.train()
                epoch_started = _clock()
                shuffle_generator.manual_seed(_mixed_seed(recipe.seed, epoch))
                order = torch.randperm(n_train, generator=shuffle_generator, device=self.device)
                shard = order[self.rank :: self.world][: steps_per_epoch * local_batch]
                loss_sum = torch.zeros((), device=self.device)
                correct_sum = torch.zeros((), device=self.device, dtype=torch.int64)
                seen = 0
                window_started, window_images = _clock(), 0
                for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
                    global_step = epoch * steps_per_epoch + step
                    lr = lr_at(recipe, global_step, total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    index = shard[step * local_batch : (step + 1) * local_batch]
                    images = self.train_x[index]
                    targets = self.train_y[index]
                    if recipe.augment:
                        generator.manual_seed(_mixed_seed(recipe.seed, epoch, step, self.rank))
                        images = augment_batch(images, generator)
                    if not cuda:
                        images, targets = images.to(self.device), targets.to(self.device)
                    inputs = preprocess(images, self.mean, self.std)
                    if self.channels_last:
                        inputs = inputs.contiguous(memory_format=torch.channels_last)
                    with autocast():
                        if use_branches:
                            logits, branch_logits = forward_module(inputs)
                            loss = head.loss(logits, branch_logits, targets, criterion)
                        else:
                            logits = forward_module(inputs)
                            loss = criterion(logits, targets)
                    if self.fault_step and global_step + 1 == self.fault_step:
                        loss = loss * float("nan")
                    if not cuda:  # CPU: check before the update, the weights stay good
                        self._check_finite(float(loss.detach()), epoch, step, dist)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    if cuda:
                        if pending_loss is not None:
                            self._check_finite(float(pending_loss), epoch, step - 1, dist)
                        pending_loss = loss.detach()
                    loss_sum += loss.detach().float() * targets.shape[0]
                    correct_sum += (logits.detach().argmax(dim=1) == targets).sum()
                    seen += targets.shape[0]
                    steps_done_here += 1
                    window_images += targets.shape[0] * self.world
                    last = step == steps_per_epoch - 1
                    if (step + 1) % max(1, recipe.step_event_every) == 0 or last:
                        if cuda:
                            torch.cuda.synchronize(self.device)
                        now = _clock()
                        remaining = total_steps - (global_step + 1)
                        per_step = (now - run_started) / max(steps_done_here, 1)
                        self.emit({
                            "event": "step", "epoch": epoch + 1, "step": step + 1, "global_step": global_step + 1,
                            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                            "loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct_sum) / max(seen, 1),
                            "lr": lr, "images_per_s": window_images / max(now - window_started, 1e-9),
                            "eta_s": remaining * per_step,
                        })
                        window_started, window_images = now, 0
                    # after the event, so a callback can cancel at once; an epoch's last step ends the epoch
                    # first (evaluation, history, checkpoint) and the cancel is honoured right after it
                    if not last and self._cancel_requested(dist):
                        if pending_loss is not None:
                            self._check_finite(float(pending_loss), epoch, step, dist)
                        raise _Stop("cancel", "cancelled by request")
                if cuda and pending_loss is not None:
                    self._check_finite(float(pending_loss), epoch, steps_per_epoch - 1, dist)
                    pending_loss = None
                train_seconds = _clock() - epoch_started
                self.train_time = time_at_start + (_clock() - run_started)
                stats_loss = float(loss_sum) / max(seen, 1)
                stats_acc = float(correct_sum) / max(seen, 1)
                self._end_epoch(epoch, stats_loss, stats_acc, lr, train_seconds, seen * self.world,
                                total_steps, steps_per_epoch, run_started, steps_done_here, dist)
                start_step = 0
                if epoch + 1 < recipe.epochs and self._cancel_requested(dist):
                    raise _Stop("cancel", "cancelled by request")
        except _Stop as stop:
            self.train_time = time_at_start + (_clock() - run_started)
            return self._stopped(stop, epoch, step, steps_per_epoch, dist)

        self.train_time = time_at_start + (_clock() - run_started)
        status = "complete"
        card_path = None
        card: dict = {}
        if self.rank == 0:
            metrics = self._final_metrics()
            card_path = self._save(status, metrics, float(recipe.epochs), position=None)
            self.state_path.unlink(missing_ok=True)
            from attnviz.checkpoints import read_card

            card = read_card(card_path)
            self.emit({"event": "end", "status": status, "checkpoint": str(card_path),
                       "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"],
                       "n_test": metrics["n_test"], "train_time_s": round(self.train_time, 2)})
        if self.world > 1:
            dist.barrier()
        return TrainResult(card_path or self.out_dir / f"{self.name}.json", card, self.history, status)

    def _finished_card(self):
        from attnviz.checkpoints import read_card

        card_path = self.out_dir / f"{self.name}.json"
        if not card_path.exists():
            return None
        try:
            card = read_card(card_path)
        except CheckpointError:
            return None
        if (card.get("status") == "complete" and card.get("spec") == self.spec
                and portable_dataset_name(str(card.get("dataset"))) == portable_dataset_name(self.data.name)
                and (card.get("recipe") or {}).get("epochs") == self.recipe.epochs):
            card["path"] = str(card_path)
            return card_path, card
        return None

    def _check_finite(self, value: float, epoch: int, step: int, dist) -> None:
        bad = not math.isfinite(value)
        if self.world > 1:
            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bool(flag.item() > 0)
        if bad:
            shown = value if not math.isfinite(value) else "non-finite (on another rank)"
            raise _Stop("diverged", f"the loss became {shown} at epoch {epoch + 1}, step {step + 1}")

    def _cancel_requested(self, dist) -> bool:
        wanted = self._should_cancel()
        if self.world > 1:  # every rank must stop at the same step
            flag = torch.tensor([1.0 if wanted else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            wanted = bool(flag.item() > 0)
        return wanted

    def _end_epoch(self, epoch, train_loss, train_acc, lr, train_seconds, images, total_steps, steps_per_epoch,
                   run_started, steps_done_here, dist) -> None:
        recipe = self.recipe
        if self.rank == 0:
            eval_started = _clock()
            metrics = evaluate(self.net, self.test_x, self.test_y, self.mean, self.std,
                               num_classes=self.data.num_classes, device=self.device,
                               autocast_dtype=self.autocast_dtype, channels_last=self.channels_last)
            metrics["measured_by"] = (f"training monitor ({self.device.type}, "
                                      f"{precision_label(self.autocast_dtype, self.channels_last)}, batch {EVAL_BATCH})")
            eval_seconds = _clock() - eval_started
            stats_started = _clock()
            attention = attention_statistics(self.net, self.probe_batch)
            stats_seconds = _clock() - stats_started
            entry = {
                "epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
                "test_loss": round(metrics["test_loss"], 6), "test_acc": metrics["test_acc"], "lr": lr,
                "time_s": round(train_seconds, 3), "eval_time_s": round(eval_seconds, 3),
                "stats_time_s": round(stats_seconds, 3),
                "images_per_s": round(images / max(train_seconds, 1e-9), 1), "attention": attention,
            }
            self.history.append(entry)
            more_epochs = (epoch + 1) < recipe.epochs
            if more_epochs:  # the last epoch's checkpoint is written after the exact final evaluation
                self._save("running", metrics, float(epoch + 1), position=(epoch + 1, 0))
            elapsed = _clock() - run_started
            remaining = total_steps - (epoch + 1) * steps_per_epoch
            self.emit({
                "event": "epoch", "epoch": epoch + 1, "epochs": recipe.epochs, "loss": train_loss,
                "train_acc": train_acc, "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"],
                "lr": lr, "images_per_s": entry["images_per_s"], "time_s": entry["time_s"],
                "eval_time_s": entry["eval_time_s"], "stats_time_s": entry["stats_time_s"],
                "eta_s": remaining * elapsed / max(steps_done_here, 1), "attention": attention,
            })
        if self.world > 1:
            dist.barrier()

    def _stopped(self, stop: _Stop, epoch: int, step: int, steps_per_epoch: int, dist):
        if stop.kind == "diverged":
            message = f"Training diverged: {stop.reason}; the last good checkpoint was kept."
            if self.rank == 0:
                self._mark_diverged(stop.reason)
                self.emit({"event": "error", "kind": "diverged", "reason": stop.reason,
                           "checkpoint": str(self.out_dir / f"{self.name}.json")
                           if (self.out_dir / f"{self.name}.json").exists() else None})
            if self.world > 1:
                dist.barrier()
            error = TrainingDiverged(message)
            error.checkpoint = self.out_dir / f"{self.name}.json"
            error.reason = stop.reason
            raise error
        # cancel: the weights after the last completed step are consistent; save them and the position
        next_epoch, next_step = (epoch, step + 1) if step + 1 < steps_per_epoch else (epoch + 1, 0)
        card_path = self.out_dir / f"{self.name}.json"
        if self.rank == 0:
            metrics = self._final_metrics()
            epochs_done = round(next_epoch + next_step / steps_per_epoch, 4)
            card_path = self._save("cancelled", metrics, epochs_done, position=(next_epoch, next_step))
            self.cancel_file.unlink(missing_ok=True)
            self.emit({"event": "error", "kind": "cancelled", "reason": stop.reason, "checkpoint": str(card_path),
                       "test_acc": metrics["test_acc"], "epochs_done": epochs_done})
        if self.world > 1:
            dist.barrier()
        error = TrainingCancelled(
            f"Training was cancelled after {next_epoch} epoch(s) and {next_step} step(s); "
            f"the checkpoint {card_path.name} holds the weights at that point (resume with --resume)."
        )
        error.checkpoint = card_path
        raise error
