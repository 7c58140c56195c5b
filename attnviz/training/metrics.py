"""What the trainer measures: test-set metrics (:func:`evaluate`) and per-epoch attention statistics.

The final card's ``metrics`` are measured by :func:`evaluate` exactly as ``attnviz eval`` measures them:
on the CPU, in float32, on a contiguous copy of the saved weights, batches of ``EVAL_BATCH``, so the two
agree exactly. Per epoch, the test split is evaluated on the training device in the training precision
(a monitor, labelled as such in the history).

Attention statistics (per epoch, on a fixed probe batch = the first ``probe_size`` test images) come
from one :func:`attnviz.analysis.probes.probe` call: the fraction of dead SE excitation units
(:func:`attnviz.analysis.probes.dead_units`, FeLU paper), the mean channel weight of every site that has
channel weights, and Interflow's branch weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.analysis.probes import dead_units, probe
from attnviz.data import preprocess
from attnviz.locks import borrowed

EVAL_BATCH = 500


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

    The model is borrowed for the call (``attnviz.locks.borrowed``: its lock and eval mode, restored
    afterwards). With the defaults (CPU, float32, batches of ``EVAL_BATCH``) this is exactly what
    ``attnviz eval`` runs.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_classes = num_classes or int(getattr(model, "num_classes", int(labels.max()) + 1))
    correct_per_class = torch.zeros(num_classes, dtype=torch.int64)
    count_per_class = torch.zeros(num_classes, dtype=torch.int64)
    loss_sum = 0.0
    with borrowed(model):
        for start in range(0, images.shape[0], batch_size):
            batch = preprocess(images[start : start + batch_size].to(device), mean, std)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            target = labels[start : start + batch_size].to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(batch)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            hits = (logits.argmax(dim=1) == target).cpu()
            target_cpu = target.cpu()
            count_per_class += torch.bincount(target_cpu, minlength=num_classes)
            correct_per_class += torch.bincount(target_cpu[hits], minlength=num_classes)
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


def attention_statistics(model: nn.Module, probe_batch: torch.Tensor) -> dict:
    """Attention statistics on a fixed, already preprocessed probe batch (one ``probe`` call).

    Returns ``{"dead_fraction": {site: f}, "dead_fraction_total": f | None,
    "channel_weight_mean": {site: m}, "interflow_branch_weights": list | None}``. The probe's hooks
    live only for its one forward pass, under the model's lock, in eval mode.
    """
    result = probe(model, probe_batch)
    dead = dead_units(result)
    branch_weights = None
    for site in result:
        if site.branch_weights is not None:
            weights = site.branch_weights.float()
            branch_weights = ([[round(v, 6) for v in row] for row in weights.tolist()] if weights.dim() == 2
                              else [round(v, 6) for v in weights.flatten().tolist()])
    return {
        "dead_fraction": dead.site_fractions(),
        "dead_fraction_total": dead.fraction if dead.total else None,
        "channel_weight_mean": {site.site: round(float(site.channel_weights.float().mean()), 6)
                                for site in result if site.channel_weights is not None},
        "interflow_branch_weights": branch_weights,
    }
