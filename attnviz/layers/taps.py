"""Taps: the one way attention internals reach probes, the trainer's statistics and the app.

Every map an attention module computes passes through a named ``AttnTap`` child. A tap is an
identity in normal use (zero cost); a probe registers a forward hook on it for one call and removes
it in ``finally``. Because the tap is a module, ``named_modules()`` finds it, and its qualified name
(``layer2.1.attn.tap_channel``) is the identifier used by the library, the caches and the UI.
Rule: never transform a value after it went through its tap, or the probe records the wrong thing.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class AttnTap(nn.Module):
    """Identity module that marks an attention map of kind ``kind`` (channel, spatial, ...)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class AttentionModule(nn.Module):
    """Base class of every attention module: it declares what it is and what can be read from it.

    A new module is one file (a subclass setting these) plus one line in ``create_attn.ATTENTIONS``;
    probes, the trainer's statistics, interventions and the app read the declarations, not the kind.

    - ``attn_kind``: the paper's module (``se``, ``lgam``, ...).
    - ``readouts``: tap name (attribute without ``tap_``) -> ``SiteProbe`` field the probe fills with
      what passed through that tap. The default suits a channel gate and/or a spatial mask.
    - ``channel_gate_tap`` / ``spatial_mask_tap`` / ``branch_weights_tap``: the tap attribute holding the
      module's overridable channel weights [B, C], spatial mask [B, 1|G|C, H, W] or branch weights
      (``attnviz.analysis.interventions``), or None when it has none.
    - ``records_input_norm``: the probe also records the per-image L2 norm of the module's input.
    - ``feature_taps``: taps holding full feature maps, dropped from a probe unless asked for.
    - ``channels_last_on_cpu_bf16``: False when this module trains slower in channels_last under bf16
      autocast on a CPU, so the trainer's ``memory_format="auto"`` keeps such a model contiguous there.
    """

    attn_kind: str = "none"
    readouts: ClassVar[dict[str, str]] = {"channel": "channel_weights", "spatial": "spatial"}
    channel_gate_tap: ClassVar[str | None] = None
    spatial_mask_tap: ClassVar[str | None] = None
    branch_weights_tap: ClassVar[str | None] = None
    records_input_norm: ClassVar[bool] = False
    feature_taps: ClassVar[tuple[str, ...]] = ()
    channels_last_on_cpu_bf16: ClassVar[bool] = True

    def derive_readouts(self, record) -> None:
        """Fill the probe fields computed from the raw taps (``record`` is a ``SiteProbe``); none by default."""

    def taps(self) -> dict[str, AttnTap]:
        """The module's own taps by attribute name (``tap_channel`` ...)."""
        return {name: m for name, m in self.named_children() if isinstance(m, AttnTap)}
