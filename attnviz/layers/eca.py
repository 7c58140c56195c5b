"""ECA: Efficient Channel Attention (Wang et al., CVPR 2020).

GAP -> 1-D convolution of kernel k across the channel axis (no bias, no dimensionality reduction)
-> sigmoid -> scale. The paper's adaptive kernel rule is k = |log2(C)/gamma + b/gamma| rounded to
the nearest odd number, gamma = 2, b = 1 (``kernel_size=None``); a fixed odd ``kernel_size`` overrides
it (the official code also exposes a fixed k_size=3).

This is also the "FC-free channel attention" that the SE CIFAR reproduction
(``senet-cifar-reproduction.md``, last section) proposes: channel weights learned without the two
FC layers, with a small shared kernel across neighbouring channels.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.taps import AttentionModule, AttnTap


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The ECA paper's adaptive kernel size (eq. (12)): nearest odd |log2(C)/gamma + b/gamma|."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECA(AttentionModule):
    attn_kind = "eca"
    readouts: ClassVar[dict[str, str]] = {"channel": "channel_weights"}
    channel_gate_tap = "tap_channel"

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, b: float = 1.0):
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise SpecError(f"ECA kernel size must be a positive odd number, got {k}.")
        self.channels = channels
        self.kernel_size = k
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        self.gate = nn.Sigmoid()
        self.tap_channel = AttnTap("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x).flatten(1)  # [B, C]
        mixed = self.conv(squeezed.unsqueeze(1)).squeeze(1)  # local cross-channel interaction
        channel_weights = self.tap_channel(self.gate(mixed))
        return x * channel_weights[:, :, None, None]
