"""VGG-16 with batch norm for CIFAR (Simonyan & Zisserman 2015), cut into the 4 stages of Interflow.

The 13 conv layers (3x3, BN, ReLU) are split as in ``interflow.md`` fig. 3 into four stages whose last
conv output feeds a branch: stage 1 = 64, 64, pool, 128, 128; stage 2 = pool, 256 x 3;
stage 3 = pool, 512 x 3; stage 4 = pool, 512 x 3. A 32x32 input gives 16x16, 8x8, 4x4 and 2x2 maps.
The classifier is global average pooling + one FC (the usual CIFAR VGG head). ``width`` scales every
conv (the zoo ships a narrower VGG that trains on a CPU; ``width=1`` is the paper's network).
Attention placement ``block`` puts a module after every conv-BN-ReLU; ``stage`` after each stage.
"""

from __future__ import annotations

from torch import nn

from attnviz.models.backbone import conv

VGG16_STAGES = [[64, 64, "M", 128, 128], ["M", 256, 256, 256], ["M", 512, 512, 512], ["M", 512, 512, 512]]


def build_vgg16(in_chans: int, block_attn, width: float = 1.0):
    stages, stage_channels = [], []
    channels = in_chans
    for stage_cfg in VGG16_STAGES:
        layers: list[nn.Module] = []
        for item in stage_cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out_channels = scale_width(int(item), width)
            layers += [conv(channels, out_channels, 3), nn.BatchNorm2d(out_channels), nn.ReLU()]
            attn = block_attn(out_channels)
            if attn is not None:
                layers.append(attn)
            channels = out_channels
        stages.append(nn.Sequential(*layers))
        stage_channels.append(channels)
    return nn.Identity(), stages, stage_channels


def scale_width(channels: int, width: float) -> int:
    """Scale a channel count, rounded to a multiple of 4 (so grouped attention still divides it)."""
    return max(4, int(round(channels * width / 4)) * 4)
