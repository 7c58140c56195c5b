"""BAM: Bottleneck Attention Module (Park et al., BMVC 2018).

M(F) = sigmoid(M_c(F) + M_s(F)) (paper eq. (2)), F' = F + F * M(F) (eq. (1)).
- Channel branch: GAP -> MLP C -> C/r -> C with BN and ReLU in the hidden layer (r = 16).
- Spatial branch: 1x1 conv C -> C/r, two 3x3 convs with dilation d = 4, 1x1 conv C/r -> 1, each
  hidden conv followed by BN + ReLU.
Switch where paper and official code disagree: ``combine="sum"`` (paper, default) or ``"product"``
(official code: sigmoid(M_c * M_s)). The authors place BAM at the bottlenecks of the network, i.e.
after every stage but the last; that is this module's default placement (``@stage``) in the zoo.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.taps import AttentionModule, AttnTap


class BAM(AttentionModule):
    attn_kind = "bam"
    readouts: ClassVar[dict[str, str]] = {"channel": "channel_logits", "spatial": "spatial_logits", "gate": "gate"}
    spatial_mask_tap = "tap_gate"  # BAM's channel branch acts only through the joint gate

    def derive_readouts(self, record) -> None:
        # BAM has no single spatial gate; the effective mask shown is the joint gate averaged over channels
        if record.gate is not None:
            record.spatial = record.gate.mean(dim=1, keepdim=True)
    default_placement = "stage"

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        dilation: int = 4,
        min_hidden: int = 1,
        combine: str = "sum",
    ):
        super().__init__()
        if combine not in ("sum", "product"):
            raise SpecError("BAM combine must be 'sum' (paper) or 'product' (official code).")
        hidden = max(min_hidden, channels // reduction)
        self.channels = channels
        self.reduction = reduction
        self.combine = combine
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )
        self.tap_channel = AttnTap("channel_logits")
        self.spatial_branch = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 1),
        )
        self.tap_spatial = AttnTap("spatial_logits")
        self.gate = nn.Sigmoid()
        self.tap_gate = AttnTap("gate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_logits = self.tap_channel(self.channel_mlp(x.mean(dim=(2, 3))))
        spatial_logits = self.tap_spatial(self.spatial_branch(x))
        if self.combine == "sum":
            joint = channel_logits[:, :, None, None] + spatial_logits
        else:
            joint = channel_logits[:, :, None, None] * spatial_logits
        attention = self.tap_gate(self.gate(joint))
        return x + x * attention
