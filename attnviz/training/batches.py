"""What one step feeds the model: a seeded shuffle, a gathered batch, its augmentation, the loss.

All images stay in memory as uint8 (on CUDA: on the GPU); each step gathers its batch by index,
augments it with batched tensor ops (random crop from a 4-pixel zero padding + horizontal flip, per
image; as torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``), normalises it and
runs the model. No DataLoader, no worker processes.

Determinism: the shuffle of epoch ``e`` comes from a generator seeded by ``(seed, e)`` and the
augmentation of step ``s`` from one seeded by ``(seed, e, s, rank)``, so a run is a pure function of
its seed and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (blake2b of their decimal forms)."""
    digest = hashlib.blake2b(",".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


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


def epoch_shard(n_train: int, seed: int, epoch: int, rank: int, world: int, length: int,
                generator: torch.Generator) -> torch.Tensor:
    """Indices this rank trains on in ``epoch``: the ``rank::world`` shard of the epoch's shuffle."""
    generator.manual_seed(mixed_seed(seed, epoch))
    order = torch.randperm(n_train, generator=generator, device=generator.device)
    return order[rank::world][:length]


def criterion(label_smoothing: float) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class WithBranches(nn.Module):
    """Forward returning (logits, branch logits) so DDP sees Interflow's auxiliary outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_with_branches(x)
