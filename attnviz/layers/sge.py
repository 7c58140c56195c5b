"""SGE: Spatial Group-wise Enhance (Li, Hu & Yang, 2019).

Channels are split into G semantic groups. Per group: g = GAP(x_g); c_i = <g, x_gi> at every
position i (eq. (2)); c is normalised over the spatial positions to zero mean and unit std
(eq. (3)); a_i = gamma_g * c_i + beta_g (eq. (4)); x'_gi = x_gi * sigmoid(a_i) (eq. (5)).
gamma and beta are per-group learned scalars, initialised to 0 and 1 as in the official code.
G defaults to 64 (the paper's choice) and is capped by the channel count (and reduced to a divisor
of C) so the module works on 16-channel CIFAR stages.

``min_group_channels`` (default 1 = the paper's G as far as the channels allow): caps G at
C / min_group_channels. The paper's G = 64 was chosen for ResNet-50's 256-2048 channels (4-32 channels
per group); on a CIFAR ResNet-20's 16-64 channels it leaves one channel per group, where c_i = x_i * mean(x)
is a single rescaled feature map whose spatial std is near zero for a mostly-silent channel, so eq. (3)
divides by ~eps and the gate saturates. ``min_group_channels=4`` restores the paper's smallest group size
(G = 4, 8, 16 on 16, 32, 64 channels); the zoo's measured choice is in ``attnviz/zoo/entries.py`` and ``reports/modules``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from attnviz.layers.taps import AttentionModule, AttnTap


def _group_count(channels: int, groups: int) -> int:
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


class SGE(AttentionModule):
    attn_kind = "sge"
    readouts: ClassVar[dict[str, str]] = {"spatial": "spatial"}
    spatial_mask_tap = "tap_spatial"
    # the [B, G, C/G, H, W] view needs a layout copy from channels_last; contiguous trains faster under
    # bf16 on a CPU (benchmarks/trainer_throughput.py prints both formats)
    channels_last_on_cpu_bf16 = False

    def __init__(self, channels: int, groups: int = 64, eps: float = 1e-5, min_group_channels: int = 1):
        super().__init__()
        if not (isinstance(min_group_channels, int) and 1 <= min_group_channels <= channels):
            from attnviz.errors import SpecError

            raise SpecError(f"SGE min_group_channels must be an integer from 1 to the channel count ({channels}).")
        self.channels = channels
        self.min_group_channels = min_group_channels
        self.groups = _group_count(channels, min(groups, channels // min_group_channels))
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(1, self.groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, self.groups, 1, 1))
        self.gate = nn.Sigmoid()
        self.tap_spatial = AttnTap("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b, self.groups, c // self.groups, h, w)
        global_feature = grouped.mean(dim=(3, 4), keepdim=True)
        similarity = (grouped * global_feature).sum(dim=2)  # [B, G, H, W]
        flat = similarity.reshape(b, self.groups, -1)
        normalised = (flat - flat.mean(dim=2, keepdim=True)) / (flat.std(dim=2, keepdim=True, correction=1 if h * w > 1 else 0) + self.eps)
        normalised = normalised.reshape(b, self.groups, h, w)
        group_gate = self.tap_spatial(self.gate(normalised * self.weight + self.bias))
        # the gate is float32 (gamma/beta are float32 parameters); under bf16 autocast multiplying a bf16 x
        # by it would make a float32 copy of the whole feature map, so the gate takes x's dtype (a no-op in
        # float32; benchmarks/module_fast_paths.py)
        return (grouped * group_gate.unsqueeze(2).to(x.dtype)).reshape(b, c, h, w)
