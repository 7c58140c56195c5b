"""CIFAR ResNets (He et al. 2016), wide ResNets (Zagoruyko & Komodakis 2016) and ResNeXt (Xie et al. 2017).

- ``resnet20/32/56/110``: 3x3 stem with 16 channels, three stages of n BasicBlocks (n = (depth-2)/6)
  with widths 16-32-64, as He et al. section 4.2 and the SE CIFAR reproduction. Down-sampling
  shortcuts are 1x1 conv + BN (``shortcut="B"``, as torchvision and the LGAM paper's ResNet-18);
  ``shortcut="A"`` is He et al.'s parameter-free zero-padding shortcut.
- ``resnet18/34``: the CIFAR variant of LGAM table 2: 3x3 stem with 64 channels, no max-pool, four
  stages 64-128-256-512 of [2,2,2,2] / [3,4,6,3] BasicBlocks.
- ``wrn16_10``: pre-activation wide ResNet, depth 16 (2 blocks per stage), widen factor 10 (LGAM table 1).
- ``resnext29_32x4d``: bottleneck ResNeXt-29, cardinality 32, base width 4 (LGAM table 1).
Attention placement ``block`` puts the module on the residual branch just before the addition (as SE
does); ``stage`` appends one module after each stage (LGAM table 2's AM rows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.models.backbone import conv

AttnFactory = Callable[[int], nn.Module | None]


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if str(kind).upper() == "A":
        return ZeroPadShortcut(in_channels, out_channels)
    return nn.Sequential(conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, attn: nn.Module | None, shortcut: str = "B"):
        super().__init__()
        self.conv1 = conv(in_channels, channels, 3, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(channels, channels, 3)
        self.bn2 = nn.BatchNorm2d(channels)
        self.bn2.residual_bn = True  # the branch's last BN (zero_init_residual)
        if attn is not None:
            self.attn = attn
        self.shortcut = _shortcut(in_channels, channels, stride, shortcut)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if hasattr(self, "attn"):
            out = self.attn(out)
        return self.relu2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ attention) + shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int, attn: nn.Module | None, shortcut: str = "B"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = conv(in_channels, channels, 3, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv2 = conv(channels, channels, 3)
        if attn is not None:
            self.attn = attn
        self.shortcut = (
            nn.Identity() if stride == 1 and in_channels == channels else conv(in_channels, channels, 1, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))
        if hasattr(self, "attn"):
            out = self.attn(out)
        return out + self.shortcut(x)


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1 -> grouped 3x3 (cardinality) -> 1x1 (+ attention) + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, attn: nn.Module | None,
                 cardinality: int, group_width: int):
        super().__init__()
        inner = cardinality * group_width
        self.conv1 = conv(in_channels, inner, 1)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(inner, inner, 3, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU()
        self.conv3 = conv(inner, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.bn3.residual_bn = True  # the branch's last BN (zero_init_residual)
        if attn is not None:
            self.attn = attn
        self.shortcut = _shortcut(in_channels, out_channels, stride, "B")
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "attn"):
            out = self.attn(out)
        return self.relu3(out + self.shortcut(x))


def _stem(in_chans: int, channels: int) -> nn.Sequential:
    return nn.Sequential(conv(in_chans, channels, 3), nn.BatchNorm2d(channels), nn.ReLU())


def build_basic_resnet(blocks_per_stage: list[int], widths: list[int], in_chans: int, block_attn: AttnFactory,
                       shortcut: str = "B", stem_width: int | None = None):
    """(stem, stages, stage_channels) of a BasicBlock ResNet."""
    stem_width = stem_width or widths[0]
    stem = _stem(in_chans, stem_width)
    stages, channels = [], stem_width
    for index, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
        layers = []
        for b in range(count):
            stride = 2 if (index > 0 and b == 0) else 1
            layers.append(BasicBlock(channels, width, stride, block_attn(width), shortcut))
            channels = width
        stages.append(nn.Sequential(*layers))
    return stem, stages, list(widths)


def build_wide_resnet(depth: int, widen: int, in_chans: int, block_attn: AttnFactory, base: int = 16):
    n = (depth - 4) // 6
    widths = [base * widen, 2 * base * widen, 4 * base * widen]
    stem = nn.Sequential(conv(in_chans, base, 3))
    stages, channels = [], base
    for index, width in enumerate(widths):
        layers = []
        for b in range(n):
            stride = 2 if (index > 0 and b == 0) else 1
            layers.append(PreActBlock(channels, width, stride, block_attn(width)))
            channels = width
        stages.append(nn.Sequential(*layers))
    # pre-activation nets end with BN-ReLU before pooling; it belongs to the last stage's output
    stages[-1].add_module("final_bn", nn.BatchNorm2d(widths[-1]))
    stages[-1].add_module("final_relu", nn.ReLU())
    return stem, stages, widths


def build_resnext(depth: int, cardinality: int, group_width: int, in_chans: int, block_attn: AttnFactory,
                  stem_width: int = 64):
    n = (depth - 2) // 9
    stem = _stem(in_chans, stem_width)
    stages, channels = [], stem_width
    widths = []
    for index in range(3):
        gw = group_width * (2**index)
        out_channels = 2 * cardinality * gw  # bottleneck output = 2x the grouped width, as the paper's CIFAR nets
        layers = []
        for b in range(n):
            stride = 2 if (index > 0 and b == 0) else 1
            layers.append(ResNeXtBlock(channels, out_channels, stride, block_attn(out_channels), cardinality, gw))
            channels = out_channels
        stages.append(nn.Sequential(*layers))
        widths.append(out_channels)
    return stem, stages, widths
