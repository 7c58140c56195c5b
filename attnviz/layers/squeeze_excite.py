"""Squeeze-and-Excitation (Hu, Shen & Sun, CVPR 2018) and its FeLU variant (He & Sun 2020).

Squeeze (eq. (1) of the FeLU paper): z_c = mean over H x W of u_c.
Excitation (eq. (2)): s = sigmoid(W2 * act(W1 * z)), W1: C -> C/r, W2: C/r -> C; scale: u_c * s_c.
``activation="relu"`` is the original SE; ``activation="felu"`` is the FeLU paper's improved SE
(formula (4) in the hidden layer); any name of ``attnviz.layers.activations`` works.

Hidden width: ``max(min_hidden, channels // reduction)``. With r = 16 a 16-channel ResNet-20 stage
gets a single hidden unit, the setting of the SE CIFAR reproduction (and where a dead ReLU switches
the whole excitation off). We ship ``min_hidden=1`` (that faithful setting) and keep it an argument.
The FCs have biases as in the reference SE implementation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.activations import get_activation
from attnviz.layers.taps import AttentionModule, AttnTap


class SqueezeExcite(AttentionModule):
    attn_kind = "se"
    readouts: ClassVar[dict[str, str]] = {"channel": "channel_weights", "hidden": "hidden"}
    channel_gate_tap = "tap_channel"

    def __init__(self, channels: int, reduction: int = 16, activation: str = "relu", min_hidden: int = 1):
        super().__init__()
        if reduction < 1 or min_hidden < 1:
            raise SpecError("SE needs reduction >= 1 and min_hidden >= 1.")
        self.channels = channels
        self.reduction = reduction
        self.activation_name = activation
        self.hidden = max(min_hidden, channels // reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.fc_reduce = nn.Linear(channels, self.hidden)
        self.tap_hidden = AttnTap("hidden")  # pre-activation, for dead-unit counts
        self.act = get_activation(activation)
        self.fc_expand = nn.Linear(self.hidden, channels)
        self.gate = nn.Sigmoid()
        self.tap_channel = AttnTap("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x).flatten(1)
        hidden = self.tap_hidden(self.fc_reduce(squeezed))
        channel_weights = self.tap_channel(self.gate(self.fc_expand(self.act(hidden))))
        return x * channel_weights[:, :, None, None]
