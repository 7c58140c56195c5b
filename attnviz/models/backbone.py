"""The model shell every zoo backbone shares: stem -> stages (layer1..layerN) -> head.

Stages are ``nn.Sequential`` modules named ``layer1``..``layerN`` so qualified names read like
torchvision's (``layer2.1.attn``). The head receives the list of every stage's output: the plain
``ClassifierHead`` uses the last one; ``InterflowHead`` uses them all (``interflow.md``). Attention
placed once per stage is appended to the stage as a child named ``attn`` (``layer2.attn``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Global average pooling of the last stage, then one FC layer."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, stage_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.pool(stage_outputs[-1]).flatten(1))


class AttnNet(nn.Module):
    """A backbone split into stages, with a classifier or an Interflow head.

    Attributes every zoo model has: ``spec``, ``num_classes``, ``in_chans``, ``stage_names``,
    ``stage_channels``, ``default_cam_layer`` (qualified name of the last stage, resolved with
    ``get_submodule``), ``is_interflow``.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Sequential], stage_channels: Sequence[int],
                 head: nn.Module, num_classes: int, in_chans: int, spec: str = ""):
        super().__init__()
        self.stem = stem
        self.stage_names = []
        for index, stage in enumerate(stages, start=1):
            self.add_module(f"layer{index}", stage)
            self.stage_names.append(f"layer{index}")
        self.head = head
        self.stage_channels = list(stage_channels)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.spec = spec
        self.default_cam_layer = self.stage_names[-1]

    @property
    def is_interflow(self) -> bool:
        return hasattr(self.head, "forward_with_branches")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_stages(x))

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, branch logits [B, n, K] or None) — the trainer uses it for Interflow's aux loss."""
        stage_outputs = self.forward_stages(x)
        if self.is_interflow:
            return self.head.forward_with_branches(stage_outputs)
        return self.head(stage_outputs), None


def init_weights(model: nn.Module) -> None:
    """He (fan_out) init for the backbone's convs, as torchvision's ResNet; BN and attention layers keep
    their own initialisation (CBAM's optional zero-init BN, SGE's 0/1, Interflow's 1/n)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and getattr(m, "backbone_conv", False):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free backbone convolution (followed by BN), marked for He initialisation."""
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                      groups=groups, bias=False)
    layer.backbone_conv = True
    return layer
