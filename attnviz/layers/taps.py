"""Taps: the one way attention internals reach probes, the trainer's statistics and the app.

Every map an attention module computes passes through a named ``AttnTap`` child. A tap is an
identity in normal use (zero cost); a probe registers a forward hook on it for one call and removes
it in ``finally``. Because the tap is a module, ``named_modules()`` finds it, and its qualified name
(``layer2.1.attn.tap_channel``) is the identifier used by the library, the caches and the UI.
Rule: never transform a value after it went through its tap, or the probe records the wrong thing.
"""

from __future__ import annotations

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
    """Base class of every attention module; ``attn_kind`` names the paper's module."""

    attn_kind: str = "none"

    def taps(self) -> dict[str, AttnTap]:
        """The module's own taps by attribute name (``tap_channel`` ...)."""
        return {name: m for name, m in self.named_children() if isinstance(m, AttnTap)}
