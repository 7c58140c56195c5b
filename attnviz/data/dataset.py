"""An in-memory dataset (:class:`ImageDataset`) and the tensor helpers around it: per-channel
statistics, channel conversion (grey <-> RGB, ITU-R BT.601 luma) and the one uint8 -> model-input
function (:func:`preprocess`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from attnviz.errors import DatasetError

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class ImageDataset:
    """A dataset held in memory: uint8 images ``[N, C, H, W]``, int64 labels, class names."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean or not self.std:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def in_chans(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_labels.shape[0])

    def subset(self, train_per_class: int | None = None, test_per_class: int | None = None) -> ImageDataset:
        """The first ``k`` images of each class of each split (stored order, so deterministic).

        Mean and std are kept from the full training split so a subset preprocesses like its parent.
        """

        def take(labels: torch.Tensor, per_class: int | None) -> torch.Tensor:
            if per_class is None:
                return torch.arange(labels.shape[0])
            picks = [torch.nonzero(labels == k).flatten()[:per_class] for k in range(self.num_classes)]
            return torch.sort(torch.cat(picks)).values

        train_idx = take(self.train_labels, train_per_class)
        test_idx = take(self.test_labels, test_per_class)
        return replace(
            self,
            train_images=self.train_images[train_idx],
            train_labels=self.train_labels[train_idx],
            test_images=self.test_images[test_idx],
            test_labels=self.test_labels[test_idx],
        )

    def card_fields(self) -> dict:
        """The model-card keys that describe this data and its preprocessing."""
        return {
            "dataset": self.name,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": list(self.input_size),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }


# ---------------------------------------------------------------------------------------------
# preprocessing shared by training and evaluation


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation on the 0..1 scale, accumulated in float64."""
    if images.shape[0] == 0:
        raise DatasetError("The training split has no images.")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 6) for m in mean), tuple(round(max(float(s), 1e-3), 6) for s in std)


def match_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Give uint8 or float images ``[N, C, H, W]`` the channel count a model expects.

    1 -> 3 replicates the grey channel; 3 -> 1 takes ITU-R BT.601 luma. Same count: unchanged.
    """
    have = images.shape[1]
    if have == in_chans:
        return images
    if have == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and in_chans == 1:
        weights = torch.tensor(_LUMA_WEIGHTS, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        luma = (images.to(torch.float32) * weights).sum(dim=1, keepdim=True)
        if images.dtype == torch.uint8:
            return luma.round_().clamp_(0, 255).to(torch.uint8)
        return luma.to(images.dtype)
    raise DatasetError(f"Cannot turn {have}-channel images into the {in_chans} channels the model expects.")


def preprocess(
    images: torch.Tensor,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> normalised float: ``(x / 255 - mean) / std`` per channel."""
    channels = images.shape[1]
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    out = images.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)
    return out if dtype == torch.float32 else out.to(dtype)
