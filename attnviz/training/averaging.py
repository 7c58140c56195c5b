"""Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima").

After the recipe's main schedule (``Recipe.epochs``) ends, ``Recipe.average_epochs`` more epochs run at
``Recipe.average_lr``, either constant or (``average_schedule="cyclic"``, the paper's eq. 2 with a
cycle of one epoch) falling linearly within each epoch to 1% of it; the weights at the end of each of
those epochs are averaged with equal weight (the paper's running mean, one snapshot per epoch). BatchNorm's running statistics of the
averaged weights belong to none of the snapshots, so they are recomputed by one pass over the training
images (the paper's ``bn_update``: with the training augmentation, float32, cumulative average, in a
fixed shuffled order). Without the augmentation, statistics of un-padded images replace those of the
padded crops the later layers were trained on, which costs a ResNet-20 several points of test accuracy
(``scripts/averaging_probe.py --bn-check`` measures it on a checkpoint's own weights). A dataset stored
class by class would without the shuffle give class-pure batches, whose variances leave out the spread
between classes.

Choices where the paper leaves room (documented so they stay visible):

- the averaging phase starts with fresh optimizer momentum, so continuing a *finished* main-schedule
  checkpoint (``attnviz.zoo`` does this for entries trained before the phase existed) is exactly the
  same run as an uninterrupted one;
- every floating-point entry of the state dict is averaged (weights, and BN statistics, which are then
  replaced by the recomputed ones); integer buffers keep the last snapshot's value.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.data import preprocess
from attnviz.training.batches import augment_batch

PREFIX = "average/"


class WeightAverage:
    """Equal-weight running mean of a model's floating-point state (CPU, float32 copies)."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, count: int = 0):
        self.tensors = tensors or {}
        self.count = count

    def add(self, model: nn.Module) -> None:
        self.count += 1
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            value = value.detach().to("cpu", torch.float32)
            if key not in self.tensors or self.count == 1:
                self.tensors[key] = value.clone()
            else:
                self.tensors[key] += (value - self.tensors[key]) / self.count

    def apply_to(self, model: nn.Module) -> None:
        """Load the averaged tensors into ``model`` (integer buffers untouched)."""
        state = model.state_dict()
        for key, value in self.tensors.items():
            state[key].copy_(value.to(state[key].dtype))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {PREFIX + key: value.contiguous() for key, value in self.tensors.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], count: int) -> WeightAverage:
        own = {key[len(PREFIX):]: value.float().clone() for key, value in tensors.items() if key.startswith(PREFIX)}
        return cls(own, count if own else 0)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, images: torch.Tensor, mean, std, *, batch_size: int = 500,
                        device: torch.device | None = None, autocast_dtype: torch.dtype | None = None,
                        channels_last: bool = False, augment: bool = True, seed: int = 0) -> int:
    """Set every BatchNorm's running mean/var to their average over ``images`` (uint8 NCHW).

    The images are visited in a shuffled order fixed by ``seed`` (batch statistics must not depend on how
    the dataset happens to be sorted) and, with ``augment``, cropped and flipped as in training. Returns how many BatchNorm layers were reset (0: nothing to do,
    no pass is made). The model's train/eval mode and each layer's momentum are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    device = device or next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch counts alike
        model.train()
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], batch_size):
            batch = images[order[start:start + batch_size]]
            if augment:
                batch = augment_batch(batch, generator)
            batch = preprocess(batch.to(device), mean, std)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                model(batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
