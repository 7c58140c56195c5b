"""``train()`` and the run it drives: set-up in one place, then an epoch loop that reads top to bottom.

A :class:`_Run` is fully built by its constructor (resume point, precision, tensors, optimizer,
forward module, batch geometry; the pieces come from :mod:`attnviz.training.setup`);
:meth:`_Run.execute` is the loop; every part of it is one short method (``_train_epoch``, ``_batch``,
``_loss``, ``_end_epoch``); how it ends (``_stopped``, ``_finish``) and what it saves are in
:mod:`attnviz.training.endings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnviz.data import ImageDataset, preprocess
from attnviz.device import describe_device, pick_device
from attnviz.errors import AttnvizError
from attnviz.paths import runs_dir
from attnviz.stats import count_params
from attnviz.training import setup
from attnviz.training.averaging import WeightAverage
from attnviz.training.batches import augment_batch, criterion, epoch_shard, mixed_seed
from attnviz.training.clock import clock, install_suspend_clock
from attnviz.training.distributed import Ranks, process_group
from attnviz.training.endings import RunEndings, StopRun
from attnviz.training.metrics import EVAL_BATCH, attention_statistics, evaluate
from attnviz.training.recipe import (
    Callback,
    Recipe,
    TrainResult,
    cpu_supports_bf16,
    lr_at,
    precision_label,
    resolve_precision,
)
from attnviz.training.state import (
    finished_card,
    load_optimizer,
    read_resume,
    state_path,
)

CANCEL_FILE = "CANCEL"


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

    ``out_dir`` defaults to the runs folder (``attnviz.checkpoints.runs_dir``); ``name`` to a cleaned-up
    spec. See :mod:`attnviz.training` for events, cancel, divergence, resume and DDP.
    """
    if isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    recipe = dataclasses.replace(recipe) if recipe is not None else Recipe()
    recipe.validate()
    device = pick_device(device)
    install_suspend_clock()
    if recipe.precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise AttnvizError("precision 'bf16' was asked for, but this CPU has no native bf16 kernels "
                           "(emulated bf16 is about 10x slower); use 'auto' or 'fp32'.")
    with process_group(device) as ranks:
        emit = callback if (callback is not None and ranks.rank == 0) else (lambda event: None)
        data = setup.dataset(data)
        net = setup.network(model, data, recipe.seed)
        name = setup.checked_name(name, str(net.spec))
        out = Path(out_dir or runs_dir())
        if resume and not state_path(out, name).exists():
            finished = finished_card(out, name, str(net.spec), data.name, recipe)
            if finished is not None:  # already trained exactly this: nothing to do
                card_path, card = finished
                emit({"event": "end", "status": "complete", "checkpoint": str(card_path),
                      "test_acc": card["metrics"]["test_acc"], "skipped": True})
                return TrainResult(card_path, card, list(card.get("history") or []), "complete")
        return _Run(net, data, recipe, out, name, emit, cancel_event, ranks, resume).execute()


@dataclass
class _Tally:
    """Running totals of one epoch (tensors on the device, read only at events)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    lr: float = 0.0
    window_started: float = 0.0
    window_images: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _Tally:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.int64),
                   window_started=clock())

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, world: int) -> None:
        self.loss_sum += loss.detach().float() * targets.shape[0]
        self.correct += (logits.detach().argmax(dim=1) == targets).sum()
        self.seen += targets.shape[0]
        self.window_images += targets.shape[0] * world

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return float(self.correct) / max(self.seen, 1)


class _Run(RunEndings):
    """One training run; built completely here, then :meth:`execute` runs the loop (its endings and
    checkpoints: :class:`~attnviz.training.endings.RunEndings`)."""

    def __init__(self, net: nn.Module, data: ImageDataset, recipe: Recipe, out_dir: Path, name: str, emit,
                 cancel_event: threading.Event | None, ranks: Ranks, resume: bool):
        self.net, self.data, self.out_dir, self.name = net, data, out_dir, name
        self.emit, self.cancel_event, self.ranks, self.resume = emit, cancel_event, ranks, resume
        self.spec = str(net.spec)
        self.in_chans = int(getattr(net, "in_chans", data.in_chans))
        self.device, self.cuda = ranks.device, ranks.device.type == "cuda"
        self.device_label = describe_device(ranks.device)
        self.state_path = state_path(out_dir, name)
        self.cancel_file = out_dir / CANCEL_FILE
        self.fault_step = int(os.environ.get("ATTNVIZ_FAULT_NAN_AT_STEP", "0") or 0)

        point = read_resume(self.state_path, self.spec, ranks.world) if resume and self.state_path.exists() else None
        self.recipe = Recipe.from_dict(point.recipe) if point else recipe
        self.history: list[dict] = list(point.history) if point else []
        self.train_time = point.train_time_s if point else 0.0
        self.autocast_dtype, self.channels_last = resolve_precision(self.recipe, self.device, net)
        if self.cuda:
            torch.backends.cudnn.benchmark = not self.recipe.deterministic
            if self.recipe.deterministic:
                torch.backends.cudnn.deterministic = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        (self.mean, self.std, self.train_x, self.train_y, self.test_x, self.test_y,
         self.probe_batch) = setup.tensors(data, self.in_chans, self.device, self.recipe.probe_size, self.channels_last)
        if point:
            net.load_state_dict(point.model_state())
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.optimizer = setup.optimizer(net, self.recipe)
        if point:
            load_optimizer(self.optimizer, point.tensors)
        # the weight-averaging phase's running mean (attnviz.training.averaging); empty before it
        self.average = WeightAverage.from_tensors(point.tensors, point.averaged) if point else WeightAverage()
        self.head, self.use_branches, self.forward_module = setup.forward_module(net, self.recipe, ranks)
        self.criterion = criterion(self.recipe.label_smoothing)

        self.n_train = self.train_x.shape[0]
        if self.recipe.batch_size % ranks.world:
            raise AttnvizError(f"batch_size {self.recipe.batch_size} must be divisible by the {ranks.world} processes.")
        per_rank_total = self.n_train // ranks.world
        if per_rank_total < 1:
            raise AttnvizError("The training split is smaller than the number of processes.")
        self.local_batch = min(self.recipe.batch_size // ranks.world, per_rank_total)
        self.steps_per_epoch = max(1, per_rank_total // self.local_batch)  # the last partial batch is dropped
        self.main_steps = self.recipe.epochs * self.steps_per_epoch  # the lr schedule's length
        self.total_epochs = self.recipe.total_epochs
        self.total_steps = self.total_epochs * self.steps_per_epoch
        self.start_epoch, self.start_step = (point.epoch, point.step) if point else (0, 0)
        if self.start_epoch >= self.total_epochs:
            self.start_epoch, self.start_step = self.total_epochs, 0

        self.flops: int | None = None  # counted once, at the first card
        self.pending_loss: torch.Tensor | None = None  # CUDA: the previous step's loss, checked one step late
        self.steps_done_here = 0
        self.run_started = clock()  # this process's share of train_time is measured from here
        self.time_at_start = self.train_time  # what earlier processes of a resumed run spent

    # ---------------------------------------------------------------------------------- the loop
    def execute(self) -> TrainResult:
        self.emit(self._start_event())
        shuffle = torch.Generator(device=self.device)
        augment = torch.Generator(device=self.device)
        try:
            for epoch in range(self.start_epoch, self.total_epochs):
                epoch_started = clock()
                first_step = self.start_step if epoch == self.start_epoch else 0
                if epoch == self.recipe.epochs and first_step == 0:
                    self.optimizer.state.clear()  # the averaging phase starts with fresh momentum
                tally = self._train_epoch(epoch, first_step, shuffle, augment)
                if epoch >= self.recipe.epochs:
                    self.average.add(self.net)
                train_seconds = clock() - epoch_started
                self.train_time = self._elapsed()
                self._end_epoch(epoch, tally, train_seconds)
                if epoch + 1 < self.total_epochs and self._cancel_requested():
                    raise StopRun("cancel", "cancelled by request", epoch, self.steps_per_epoch - 1)
        except StopRun as stop:
            self.train_time = self._elapsed()
            return self._stopped(stop)
        self.train_time = self._elapsed()
        return self._finish()

    def _train_epoch(self, epoch: int, first_step: int, shuffle: torch.Generator, augment: torch.Generator) -> _Tally:
        self.net.train()
        shard = epoch_shard(self.n_train, self.recipe.seed, epoch, self.ranks.rank, self.ranks.world,
                            self.steps_per_epoch * self.local_batch, shuffle)
        tally = _Tally.zeros(self.device)
        for step in range(first_step, self.steps_per_epoch):
            global_step = epoch * self.steps_per_epoch + step
            tally.lr = self._set_lr(global_step)
            inputs, targets = self._batch(shard, epoch, step, augment)
            logits, loss = self._loss(inputs, targets, global_step)
            if not self.cuda:  # CPU: check before the update, so the weights stay good
                self._check_finite(float(loss.detach()), epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.cuda:  # reading this step's loss now would drain the GPU queue
                self._check_pending(epoch, step - 1)
                self.pending_loss = loss.detach()
            tally.add(loss, logits, targets, self.ranks.world)
            self.steps_done_here += 1
            last = step == self.steps_per_epoch - 1
            if (step + 1) % max(1, self.recipe.step_event_every) == 0 or last:
                self._emit_step(epoch, step, tally)
            # after the event, so a callback can cancel at once; an epoch's last step ends the epoch
            # first (evaluation, history, checkpoint) and the cancel is honoured right after it
            if not last and self._cancel_requested():
                self._check_pending(epoch, step)
                raise StopRun("cancel", "cancelled by request", epoch, step)
        self._check_pending(epoch, self.steps_per_epoch - 1)
        return tally

    def _elapsed(self) -> float:
        """Training time of the whole run so far: earlier processes' plus this one's (suspensions left out)."""
        return self.time_at_start + (clock() - self.run_started)

    # ------------------------------------------------------------------------------- one step
    def _set_lr(self, global_step: int) -> float:
        lr = lr_at(self.recipe, global_step, self.main_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _batch(self, shard: torch.Tensor, epoch: int, step: int, augment: torch.Generator):
        index = shard[step * self.local_batch : (step + 1) * self.local_batch]
        images, targets = self.train_x[index], self.train_y[index]
        if self.recipe.augment:
            augment.manual_seed(mixed_seed(self.recipe.seed, epoch, step, self.ranks.rank))
            images = augment_batch(images, augment)
        if not self.cuda:
            images, targets = images.to(self.device), targets.to(self.device)
        inputs = preprocess(images, self.mean, self.std)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor, global_step: int):
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        with autocast:
            if self.use_branches:
                logits, branch_logits = self.forward_module(inputs)
                loss = self.head.loss(logits, branch_logits, targets, self.criterion)
            else:
                logits = self.forward_module(inputs)
                loss = self.criterion(logits, targets)
        if self.fault_step and global_step + 1 == self.fault_step:
            loss = loss * float("nan")  # fault injection (tests, drills)
        return logits, loss

    def _check_finite(self, value: float, epoch: int, step: int) -> None:
        if self.ranks.any(not math.isfinite(value)):
            shown = value if not math.isfinite(value) else "non-finite (on another rank)"
            raise StopRun("diverged", f"the loss became {shown} at epoch {epoch + 1}, step {step + 1}")

    def _check_pending(self, epoch: int, step: int) -> None:
        if self.pending_loss is not None:
            pending, self.pending_loss = self.pending_loss, None
            self._check_finite(float(pending), epoch, step)

    def _cancel_requested(self) -> bool:
        wanted = bool((self.cancel_event is not None and self.cancel_event.is_set()) or self.cancel_file.exists())
        return self.ranks.any(wanted)  # every rank must stop at the same step

    # ----------------------------------------------------------------------------------- events
    def _start_event(self) -> dict:
        return {
            "event": "start", "name": self.name, "spec": self.spec, "dataset": self.data.name,
            "n_train": self.n_train, "n_test": int(self.test_y.shape[0]), "num_classes": self.data.num_classes,
            "epochs": self.total_epochs, "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.local_batch * self.ranks.world, "device": self.device_label,
            "world_size": self.ranks.world, "params": count_params(self.net), "recipe": self.recipe.to_dict(),
            "resumed_at": [self.start_epoch, self.start_step] if self.resume else None,
            "out_dir": str(self.out_dir),
        }

    def _emit_step(self, epoch: int, step: int, tally: _Tally) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        now = clock()
        global_step = epoch * self.steps_per_epoch + step
        per_step = (now - self.run_started) / max(self.steps_done_here, 1)
        self.emit({
            "event": "step", "epoch": epoch + 1, "step": step + 1, "global_step": global_step + 1,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "loss": tally.loss, "train_acc": tally.accuracy, "lr": tally.lr,
            "images_per_s": tally.window_images / max(now - tally.window_started, 1e-9),
            "eta_s": (self.total_steps - (global_step + 1)) * per_step,
        })
        tally.window_started, tally.window_images = now, 0

    def _end_epoch(self, epoch: int, tally: _Tally, train_seconds: float) -> None:
        """Evaluate, record the epoch in the history, checkpoint (not after the last) and emit; rank 0."""
        if self.ranks.rank == 0:
            eval_started = clock()
            metrics = evaluate(self.net, self.test_x, self.test_y, self.mean, self.std,
                               num_classes=self.data.num_classes, device=self.device,
                               autocast_dtype=self.autocast_dtype, channels_last=self.channels_last)
            metrics["measured_by"] = (f"training monitor ({self.device.type}, "
                                      f"{precision_label(self.autocast_dtype, self.channels_last)}, batch {EVAL_BATCH})")
            eval_seconds = clock() - eval_started
            stats_started = clock()
            attention = attention_statistics(self.net, self.probe_batch)
            stats_seconds = clock() - stats_started
            entry = {
                "epoch": epoch + 1, "train_loss": round(tally.loss, 6), "train_acc": round(tally.accuracy, 6),
                "test_loss": round(metrics["test_loss"], 6), "test_acc": metrics["test_acc"], "lr": tally.lr,
                "time_s": round(train_seconds, 3), "eval_time_s": round(eval_seconds, 3),
                "stats_time_s": round(stats_seconds, 3),
                "precision": precision_label(self.autocast_dtype, self.channels_last),
                "images_per_s": round(tally.seen * self.ranks.world / max(train_seconds, 1e-9), 1),
                "attention": attention,
            }
            if self.average.count:
                entry["average_test_acc"] = self._average_monitor()
            self.history.append(entry)
            if epoch + 1 < self.total_epochs:  # the last epoch's checkpoint follows the exact final evaluation
                self._save("running", metrics, float(epoch + 1), position=(epoch + 1, 0))
            elapsed = clock() - self.run_started
            remaining = self.total_steps - (epoch + 1) * self.steps_per_epoch
            self.emit({
                "event": "epoch", "epoch": epoch + 1, "epochs": self.total_epochs, "loss": tally.loss,
                "train_acc": tally.accuracy, "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"],
                "lr": tally.lr, "images_per_s": entry["images_per_s"], "time_s": entry["time_s"],
                "eval_time_s": entry["eval_time_s"], "stats_time_s": entry["stats_time_s"],
                "eta_s": remaining * elapsed / max(self.steps_done_here, 1), "attention": attention,
            } | ({"average_test_acc": entry["average_test_acc"]} if "average_test_acc" in entry else {}))
        self.ranks.barrier()
