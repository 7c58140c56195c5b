"""Adding an attention module is one file (the class, here in this test) plus one registry line.

The throwaway module below declares what it is (``AttentionModule`` class attributes) and is
registered with a single entry in ``create_attn.ATTENTIONS``; nothing in probes, the trainer,
interventions or the drawing code is edited, and the test sees it probed, counted by the trainer's
statistics, overridable and drawn.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.layers import create_attn
from attnviz.layers.taps import AttentionModule, AttnTap


class CentreGate(AttentionModule):
    """A throwaway module: a channel gate (sigmoid of a learned vector) times a spatial gate (sigmoid of
    a 1x1 convolution). Not from any paper; it only has to be an attention module with both maps."""

    attn_kind = "centregate"
    readouts: ClassVar[dict[str, str]] = {"channel": "channel_weights", "spatial": "spatial"}
    channel_gate_tap = "tap_channel"
    spatial_mask_tap = "tap_spatial"

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.channel_logits = nn.Parameter(torch.linspace(-1, 1, channels))
        self.spatial_conv = nn.Conv2d(channels, 1, 1)
        self.tap_channel = AttnTap("channel")
        self.tap_spatial = AttnTap("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_weights = self.tap_channel(torch.sigmoid(self.channel_logits).expand(x.shape[0], -1))
        spatial = self.tap_spatial(torch.sigmoid(self.spatial_conv(x)))
        return x * channel_weights[:, :, None, None] * spatial


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(create_attn.ATTENTIONS, "centregate", CentreGate)  # the one registry line
    torch.manual_seed(0)
    from attnviz.models.registry import create_model

    return create_model("resnet20-centregate", num_classes=10).eval()


def test_a_registered_module_is_built_probed_and_counted(registered):
    from attnviz.analysis.probes import probe
    from attnviz.training import attention_statistics

    sites = [name for name, m in registered.named_modules() if isinstance(m, CentreGate)]
    assert len(sites) == 9  # one per residual block of ResNet-20
    x = torch.randn(3, 3, 32, 32)
    result = probe(registered, x)
    record = result[sites[0]]
    assert record.kind == "centregate" and record.has_spatial_mask
    assert record.channel_weights.shape == (3, 16) and record.spatial.shape == (3, 1, 32, 32)
    assert set(result.channel_weights()) == set(sites) == set(result.spatial_maps())
    stats = attention_statistics(registered, x)
    assert set(stats["channel_weight_mean"]) == set(sites)
    expected = float(torch.sigmoid(torch.linspace(-1, 1, 16)).mean())
    assert stats["channel_weight_mean"][sites[0]] == pytest.approx(expected, abs=1e-6)


def test_a_registered_module_can_be_intervened_on_and_drawn(registered):
    from attnviz.analysis.faithfulness import module_masks
    from attnviz.analysis.interventions import Intervention, applicable_methods, intervene
    from attnviz.overlay import overlay_png

    site = next(name for name, m in registered.named_modules() if isinstance(m, CentreGate))
    module = registered.get_submodule(site)
    assert set(applicable_methods(module)) >= {"channel_ones", "spatial_ones"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = registered(x)
        with intervene(registered, [Intervention(site, "spatial_ones")]) as changed:
            spatial_off = changed(x)
        again = registered(x)
    assert not torch.allclose(plain, spatial_off) and torch.equal(plain, again)  # applied, then restored
    masks = module_masks(registered, x)
    assert masks[site].shape == (2, 32, 32) and 0 < masks[site].min() <= masks[site].max() < 1
    png = overlay_png(np.full((32, 32, 3), 128, dtype=np.uint8), masks[site][0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
