"""Factory from an attention name to its module class; ``channels`` is always the first argument.

Names: ``none se lgam cbam bam sge eca``. ``se`` accepts ``activation=`` (the spec ``se-felu`` sets
it). ``create_attn("none", c)`` returns ``None`` (no module is inserted).
"""

from __future__ import annotations

from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.bam import BAM
from attnviz.layers.cbam import CBAM
from attnviz.layers.eca import ECA
from attnviz.layers.lgam import LGAM
from attnviz.layers.sge import SGE
from attnviz.layers.squeeze_excite import SqueezeExcite

ATTENTIONS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "se": SqueezeExcite,
    "lgam": LGAM,
    "cbam": CBAM,
    "bam": BAM,
    "sge": SGE,
    "eca": ECA,
}


def list_attentions() -> list[str]:
    return list(ATTENTIONS)


def get_attn_class(name: str) -> type[nn.Module] | None:
    key = name.lower()
    if key not in ATTENTIONS:
        raise SpecError(f"Unknown attention '{name}'; known: {', '.join(ATTENTIONS)}.")
    return ATTENTIONS[key]


def create_attn(name: str, channels: int, **kwargs) -> nn.Module | None:
    cls = get_attn_class(name)
    if cls is None:
        return None
    try:
        return cls(channels, **kwargs)
    except TypeError as err:
        raise SpecError(f"Bad option for attention '{name}': {err}.") from err
