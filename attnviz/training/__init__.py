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

The package, one role per file:
- :mod:`~attnviz.training.recipe`: the :class:`Recipe`, the lr schedule (:func:`lr_at`), precision.
- :mod:`~attnviz.training.batches`: the seeded shuffle, batch augmentation, the loss.
- :mod:`~attnviz.training.metrics`: :func:`evaluate` (the card's numbers) and attention statistics.
- :mod:`~attnviz.training.state`: the resume state file and the card checks around it.
- :mod:`~attnviz.training.distributed`: DDP under ``torchrun``; :mod:`~attnviz.training.clock`: time.
- :mod:`~attnviz.training.setup`: the pieces a run is built from; :mod:`~attnviz.training.loop`:
  ``train()`` and the epoch loop.

Speed: images stay in memory as uint8, each step gathers, augments and normalises its batch with
tensor ops (no DataLoader). The precision (bf16 autocast where the hardware has native kernels) and
memory format are chosen per model (:func:`resolve_precision`); the card records it as
``training_precision``, and its final ``metrics`` are always CPU float32. CPU: ``torch.set_num_threads``
= the cores this process may use (divided among DDP ranks). CUDA: ``cudnn.benchmark``, optional
``torch.compile``; the non-finite check reads the previous step's loss, so the GPU queue never drains.

Determinism: a run is a pure function of its seed (identical weights on CPU for the same seed), and a
resumed run continues exactly where it stopped. On CUDA, set ``Recipe.deterministic`` for bitwise
repeatability (slower kernels).

Events go to ``callback(dict)``: ``{"event": "start"|"step"|"epoch"|"checkpoint"|"end"|"error", ...}``
with ``loss``, ``train_acc``, ``test_acc``, ``lr``, ``images_per_s``, ``eta_s`` and, per epoch,
``attention``. Only rank 0 emits events under DDP.

Pause: suspend the process with SIGTSTP (Ctrl-Z, or ``kill -TSTP PID``) and continue it with SIGCONT;
the suspended time is left out of every recorded duration (a plain SIGSTOP cannot be seen and counts).

Cancel: ``cancel_event`` (a ``threading.Event``) set from any thread, or a file named ``CANCEL`` in
``out_dir`` (create it from another process), is seen at the next step. The CLI maps SIGINT/SIGTERM
to the event.

Fault injection (tests and drills): ``ATTNVIZ_FAULT_NAN_AT_STEP=N`` makes the loss of global step N
non-finite, to exercise the divergence path end to end.
"""

from attnviz.training.batches import augment_batch
from attnviz.training.loop import CANCEL_FILE, train
from attnviz.training.metrics import EVAL_BATCH, attention_statistics, evaluate
from attnviz.training.recipe import (
    Recipe,
    TrainResult,
    cpu_supports_bf16,
    lr_at,
    precision_label,
    resolve_precision,
)
from attnviz.training.setup import default_name

__all__ = [
    "CANCEL_FILE",
    "EVAL_BATCH",
    "Recipe",
    "TrainResult",
    "attention_statistics",
    "augment_batch",
    "cpu_supports_bf16",
    "default_name",
    "evaluate",
    "lr_at",
    "precision_label",
    "resolve_precision",
    "train",
]
