"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018).

Channel attention (eq. (2)): M_c = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))) with one MLP shared
by both pooled vectors (C -> C/r -> C, ReLU, r = 16). Spatial attention (eq. (3)):
M_s = sigmoid(BN(conv7x7([AvgPool_c(F'); MaxPool_c(F')]))) as in the official code (conv without
bias, then BN). Applied sequentially: F' = M_c * F, F'' = M_s * F'.

Max pooling as in the official code (``F.max_pool2d`` over the whole map for the channel descriptor,
``torch.max(x, 1)`` for the spatial one): the forward equals ``amax``, and the gradient goes to one
maximal element. ``amax``'s backward instead splits it over ties and builds full-size masks to do so:
a ResNet-20 training step is faster with ``max`` (``benchmarks/module_fast_paths.py`` prints the ratio).
Only the subgradient at a tie differs.

Switch where implementations disagree: ``spatial_bn_zero_init`` (default False, as the paper and
the official code): some re-implementations start the spatial BN's weight at 0 so the spatial gate
starts at sigmoid(0) = 0.5 everywhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from attnviz.layers.taps import AttentionModule, AttnTap


class CBAM(AttentionModule):
    attn_kind = "cbam"
    channel_gate_tap = "tap_channel"
    spatial_mask_tap = "tap_spatial"
    # the channel-wise mean/max and the 2-channel 7x7 conv run faster on contiguous maps under bf16 on a
    # CPU (benchmarks/trainer_throughput.py prints both formats)
    channels_last_on_cpu_bf16 = False

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        min_hidden: int = 1,
        spatial_bn_zero_init: bool = False,
    ):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.channels = channels
        self.reduction = reduction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.channel_gate = nn.Sigmoid()
        self.tap_channel = AttnTap("channel")
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)
        if spatial_bn_zero_init:
            nn.init.zeros_(self.spatial_bn.weight)
        self.spatial_gate = nn.Sigmoid()
        self.tap_spatial = AttnTap("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3))
        mx = F.adaptive_max_pool2d(x, 1).flatten(1)
        channel_weights = self.tap_channel(self.channel_gate(self.mlp(avg) + self.mlp(mx)))
        refined = x * channel_weights[:, :, None, None]
        pooled = torch.cat([refined.mean(dim=1, keepdim=True), refined.max(dim=1, keepdim=True).values], dim=1)
        spatial_map = self.tap_spatial(self.spatial_gate(self.spatial_bn(self.spatial_conv(pooled))))
        return refined * spatial_map
