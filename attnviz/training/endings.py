"""How a run ends and what it writes: :class:`RunEndings`, the part of ``loop._Run`` that finishes a run
(the averaged weights, the exact final evaluation), stops it (cancelled: the position is saved;
diverged: the last good checkpoint is kept and marked) and writes checkpoints, cards and resume states.

It is a mixin of ``_Run`` (same attributes, built by ``_Run.__init__``), kept in its own file so that
``loop.py`` holds the set-up and the loop alone.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from attnviz.checkpoints import read_card, save_checkpoint, state_dict_for_saving
from attnviz.data import portable_dataset_name
from attnviz.errors import CheckpointError, TrainingCancelled, TrainingDiverged, TrainingError
from attnviz.models.registry import create_model
from attnviz.stats import count_flops
from attnviz.training.averaging import recompute_batchnorm
from attnviz.training.metrics import EVAL_BATCH, evaluate
from attnviz.training.recipe import TrainResult, precision_label, precision_over_epochs
from attnviz.training.state import mark_diverged, write_state


class StopRun(Exception):
    """Leaves the loop: ``kind`` is ``cancel`` or ``diverged``; (epoch, step) is the last step done."""

    def __init__(self, kind: str, reason: str, epoch: int = 0, step: int = 0):
        super().__init__(reason)
        self.kind, self.reason, self.epoch, self.step = kind, reason, epoch, step


class RunEndings:
    """Endings and saving of a training run (``attnviz.training.loop._Run`` supplies the state)."""

    # ------------------------------------------------------------------------------ endings
    def _finish(self) -> TrainResult:
        card_path, card = self.out_dir / f"{self.name}.json", {}
        if self.average.count:  # every rank: the same mean and the same pass, so the weights stay equal
            self.average.apply_to(self.net)
            recompute_batchnorm(self.net, self.train_x, self.mean, self.std, device=self.device,
                                channels_last=self.channels_last, augment=self.recipe.augment)
            self.train_time = self._elapsed()  # the statistics pass is part of the training
        if self.ranks.rank == 0:
            metrics = self._final_metrics()
            card_path = self._save("complete", metrics, float(self.total_epochs), position=None)
            self.state_path.unlink(missing_ok=True)
            card = read_card(card_path)
            self.emit({"event": "end", "status": "complete", "checkpoint": str(card_path),
                       "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"],
                       "n_test": metrics["n_test"], "train_time_s": round(self.train_time, 2)})
        self.ranks.barrier()
        return TrainResult(card_path, card, self.history, "complete")

    def _stopped(self, stop: StopRun) -> TrainResult:
        card_path = self.out_dir / f"{self.name}.json"
        if stop.kind == "diverged":
            if self.ranks.rank == 0:
                mark_diverged(card_path, stop.reason)
                self.emit({"event": "error", "kind": "diverged", "reason": stop.reason,
                           "checkpoint": str(card_path) if card_path.exists() else None})
            self.ranks.barrier()
            error = TrainingDiverged(f"Training diverged: {stop.reason}; the last good checkpoint was kept.")
            error.checkpoint, error.reason = card_path, stop.reason
            raise error
        # cancel: the weights after the last completed step are consistent; save them and the position
        if stop.step + 1 < self.steps_per_epoch:
            next_epoch, next_step = stop.epoch, stop.step + 1
        else:
            next_epoch, next_step = stop.epoch + 1, 0
        if self.ranks.rank == 0:
            metrics = self._final_metrics()
            epochs_done = round(next_epoch + next_step / self.steps_per_epoch, 4)
            card_path = self._save("cancelled", metrics, epochs_done, position=(next_epoch, next_step))
            self.cancel_file.unlink(missing_ok=True)
            self.emit({"event": "error", "kind": "cancelled", "reason": stop.reason, "checkpoint": str(card_path),
                       "test_acc": metrics["test_acc"], "epochs_done": epochs_done})
        self.ranks.barrier()
        error = TrainingCancelled(
            f"Training was cancelled after {next_epoch} epoch(s) and {next_step} step(s); "
            f"the checkpoint {card_path.name} holds the weights at that point (resume with --resume)."
        )
        error.checkpoint = card_path
        raise error

    # --------------------------------------------------------------------------------- saving
    def _card(self, status: str, metrics: dict, epochs_done: float) -> dict:
        from attnviz import __version__

        if self.flops is None:
            self.flops = count_flops(copy.deepcopy(self.net).to("cpu").float(), (self.in_chans, *self.data.input_size))
        return self.data.card_fields() | {
            "name": self.name, "spec": self.spec, "in_chans": self.in_chans, "mean": list(self.mean),
            "std": list(self.std), "metrics": metrics, "recipe": self.recipe.to_dict(), "seed": self.recipe.seed,
            "attnviz_version": __version__, "flops": self.flops, "train_time_s": round(self.train_time, 2),
            "device": self.device_label + (f" x{self.ranks.world} (DDP)" if self.ranks.world > 1 else ""),
            "training_precision": precision_over_epochs(self.history, precision_label(self.autocast_dtype,
                                                                                   self.channels_last)),
            "torch_version": torch.__version__, "status": status, "epochs_done": epochs_done,
            "n_train": self.data.n_train, "history": self.history,
        }

    def _average_monitor(self) -> float:
        """Test accuracy of the weights averaged so far (BN recomputed on every 5th training image; a monitor)."""
        averaged = copy.deepcopy(self.net)
        self.average.apply_to(averaged)
        recompute_batchnorm(averaged, self.train_x[::5], self.mean, self.std, device=self.device,
                            autocast_dtype=self.autocast_dtype, channels_last=self.channels_last,
                            augment=self.recipe.augment)
        return evaluate(averaged, self.test_x, self.test_y, self.mean, self.std, num_classes=self.data.num_classes,
                        device=self.device, autocast_dtype=self.autocast_dtype,
                        channels_last=self.channels_last)["test_acc"]

    def _final_metrics(self) -> dict:
        """Measure like ``attnviz eval``: CPU, float32, contiguous copy of the weights."""

        clone = create_model(self.spec, num_classes=self.data.num_classes, in_chans=self.in_chans)
        clone.load_state_dict(state_dict_for_saving(self.net))
        metrics = evaluate(clone, self.test_x, self.test_y, self.mean, self.std,
                           num_classes=self.data.num_classes, device="cpu")
        metrics["measured_by"] = f"attnviz eval (cpu, float32, batch {EVAL_BATCH})"
        return metrics

    def _save(self, status: str, metrics: dict, epochs_done: float, position: tuple[int, int] | None) -> Path:
        """Write the checkpoint (card last), then the resume state; rank 0 only."""
        try:
            card_path = save_checkpoint(self.net, self.out_dir, self.name, self._card(status, metrics, epochs_done))
            if position is not None:
                write_state(self.state_path, self.net, self.optimizer, {
                    "name": self.name, "spec": self.spec, "dataset": portable_dataset_name(self.data.name),
                    "recipe": self.recipe.to_state(),
                    "epoch": position[0], "averaged": self.average.count,
                    "step": position[1], "world_size": self.ranks.world, "history": self.history,
                    "train_time_s": self.train_time, "mean": list(self.mean), "std": list(self.std),
                }, extra=self.average.to_tensors())
        except CheckpointError as err:
            raise TrainingError(f"{err} Training stopped; the previous checkpoint was kept.") from err
        self.emit({"event": "checkpoint", "path": str(card_path), "status": status, "epochs_done": epochs_done})
        return card_path
