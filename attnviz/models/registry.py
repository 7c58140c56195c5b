"""Model registry: spec strings -> models.

Spec grammar: ``ARCH[-ATTENTION[-ACTIVATION]][-interflow-MODE][@PLACEMENT][:key=value,...]``
- ``resnet20``, ``resnet20-se``, ``resnet20-se-felu``, ``resnet18-lgam``, ``resnet18-cbam@stage``,
  ``vgg16-interflow-soft:width=0.25``, ``resnet20-se-interflow-per_class``, ``resnet20-lgam:groups=2``.
- Options are routed by name: backbone options (``width``, ``shortcut``), interflow options
  (``aux_weight``, ``hard_weights`` as ``0.2/0.3/0.5``) and otherwise attention constructor arguments
  (``reduction``, ``groups``, ``ladder``, ``min_hidden`` ...). Unknown keys are errors.
``register_arch`` refuses a duplicate name, like torchvision's registry.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.activations import ACTIVATIONS
from attnviz.layers.create_attn import get_attn_class, list_attentions
from attnviz.models import resnet_cifar, vgg_cifar
from attnviz.models.backbone import AttnNet, ClassifierHead, init_weights
from attnviz.models.interflow import MODES, InterflowHead

BACKBONE_OPTIONS = {"width", "shortcut"}
# Initialisation options of the whole model (not builder arguments). ``zero_init_residual=true``: the
# last BatchNorm of every residual branch starts with gamma = 0 (Goyal et al. 2017, "Accurate, Large
# Minibatch SGD", sec. 5.1), so every block starts as the identity; applies to backbones with residual
# blocks (their blocks mark that BN with ``residual_bn``). ``residual_bn_gamma=g`` (0 < g <= 1) is the
# partial form: that BN starts with gamma = g, so a block's branch starts at g times its usual scale
# (SkipInit/Fixup-style down-scaling of residual branches: De & Smith 2020, Zhang et al. 2019). It
# exists for modules that amplify their input, such as LGAM (~5x at initialisation, see
# attnviz/layers/lgam.py): g = 0.25 starts such a branch near a plain branch's scale instead of at zero.
INIT_OPTIONS = {"zero_init_residual", "residual_bn_gamma"}
INTERFLOW_OPTIONS = {"aux_weight", "hard_weights"}
PLACEMENTS = ("block", "stage")

# builder(in_chans, block_attn, **backbone_options) -> (stem, stages, stage_channels)
ArchBuilder = Callable[..., tuple]
_ARCHS: dict[str, ArchBuilder] = {}


def register_arch(name: str, builder: ArchBuilder | None = None):
    """Register a backbone builder under ``name``; a duplicate name is an error."""

    def decorator(fn: ArchBuilder) -> ArchBuilder:
        if name in _ARCHS:
            raise ValueError(f"architecture '{name}' is already registered")
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ValueError(f"architecture name '{name}' must be lower-case letters, digits and _")
        _ARCHS[name] = fn
        return fn

    return decorator(builder) if builder is not None else decorator


def _scaled(widths, width):
    return [vgg_cifar.scale_width(w, width) for w in widths]


def _cifar_resnet(depth: int):
    n = (depth - 2) // 6

    def build(in_chans, block_attn, width=1.0, shortcut="B"):
        return resnet_cifar.build_basic_resnet([n] * 3, _scaled([16, 32, 64], width), in_chans, block_attn, shortcut)

    return build


for _depth in (20, 32, 56, 110):
    register_arch(f"resnet{_depth}", _cifar_resnet(_depth))


@register_arch("resnet18")
def _resnet18(in_chans, block_attn, width=1.0, shortcut="B"):
    return resnet_cifar.build_basic_resnet([2, 2, 2, 2], _scaled([64, 128, 256, 512], width), in_chans,
                                           block_attn, shortcut)


@register_arch("resnet34")
def _resnet34(in_chans, block_attn, width=1.0, shortcut="B"):
    return resnet_cifar.build_basic_resnet([3, 4, 6, 3], _scaled([64, 128, 256, 512], width), in_chans,
                                           block_attn, shortcut)


@register_arch("wrn16_10")
def _wrn16_10(in_chans, block_attn, width=1.0):
    return resnet_cifar.build_wide_resnet(16, max(1, round(10 * width)), in_chans, block_attn)


@register_arch("resnext29_32x4d")
def _resnext29(in_chans, block_attn, width=1.0):
    return resnet_cifar.build_resnext(29, 32, max(1, round(4 * width)), in_chans, block_attn)


@register_arch("vgg16")
def _vgg16(in_chans, block_attn, width=1.0):
    return vgg_cifar.build_vgg16(in_chans, block_attn, width)


@dataclass
class ModelSpec:
    arch: str
    attention: str = "none"
    activation: str | None = None
    interflow: str | None = None
    placement: str | None = None  # None = the attention's default
    options: dict = field(default_factory=dict)

    def canonical(self) -> str:
        name = self.arch
        if self.attention != "none":
            name += f"-{self.attention}"
            if self.activation:
                name += f"-{self.activation}"
        if self.interflow:
            name += f"-interflow-{self.interflow}"
        if self.placement:
            name += f"@{self.placement}"
        if self.options:
            name += ":" + ",".join(f"{k}={_format_value(v)}" for k, v in sorted(self.options.items()))
        return name

    @property
    def effective_placement(self) -> str:
        if self.placement:
            return self.placement
        cls = get_attn_class(self.attention)
        return getattr(cls, "default_placement", "block") if cls else "block"


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "/".join(_format_value(v) for v in value)
    return str(value)


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if "/" in text:
        return [_parse_value(part) for part in text.split("/")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> ModelSpec:
    """Parse a spec string; raises ``SpecError`` with one sentence on anything malformed."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("A model spec must be a non-empty string such as 'resnet20-se-felu'.")
    text = spec.strip().lower()
    options: dict = {}
    if ":" in text:
        text, _, opt_text = text.partition(":")
        for item in filter(None, opt_text.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise SpecError(f"Option '{item}' in spec '{spec}' must look like key=value.")
            options[key.strip()] = _parse_value(value.strip())
    placement = None
    if "@" in text:
        text, _, placement = text.partition("@")
        if placement not in PLACEMENTS:
            raise SpecError(f"Placement '@{placement}' is unknown; use @block or @stage.")
    tokens = text.split("-")
    arch = tokens[0]
    if arch not in _ARCHS:
        raise SpecError(f"Unknown architecture '{arch}' in '{spec}'; known: {', '.join(_ARCHS)}.")
    rest = tokens[1:]
    interflow = None
    if "interflow" in rest:
        i = rest.index("interflow")
        if i + 1 >= len(rest) or rest[i + 1] not in MODES:
            raise SpecError(f"'interflow' must be followed by a mode ({', '.join(MODES)}) in '{spec}'.")
        interflow = rest[i + 1]
        if rest[i + 2:]:
            raise SpecError(f"Unexpected '{'-'.join(rest[i + 2:])}' after the Interflow mode in '{spec}'.")
        rest = rest[:i]
    attention, activation = "none", None
    if rest:
        attention = rest[0]
        if attention not in list_attentions():
            raise SpecError(f"Unknown attention '{attention}' in '{spec}'; known: {', '.join(list_attentions())}.")
        if len(rest) > 2:
            raise SpecError(f"Too many parts in '{spec}'.")
        if len(rest) == 2:
            activation = rest[1].replace("-", "_")
            if attention != "se" or activation not in ACTIVATIONS:
                raise SpecError(f"'{rest[1]}' is not an activation option of '{attention}' in '{spec}'.")
            if activation == "relu":
                activation = None  # se-relu is plain SE
    if attention == "none" and placement:
        raise SpecError(f"A placement (@{placement}) needs an attention module in '{spec}'.")
    parsed = ModelSpec(arch, attention, activation, interflow, placement, options)
    _split_options(parsed)  # validates option names early
    return parsed


def _split_options(parsed: ModelSpec) -> tuple[dict, dict, dict]:
    backbone, interflow, attention = {}, {}, {}
    attn_cls = get_attn_class(parsed.attention)
    attn_params = set(inspect.signature(attn_cls.__init__).parameters) - {"self", "channels"} if attn_cls else set()
    arch_params = set(inspect.signature(_ARCHS[parsed.arch]).parameters) - {"in_chans", "block_attn"}
    for key, value in parsed.options.items():
        if key in INIT_OPTIONS:
            continue  # applied by create_model after the weights are initialised
        if key in BACKBONE_OPTIONS and key in arch_params:
            backbone[key] = value
        elif key in INTERFLOW_OPTIONS and parsed.interflow:
            interflow[key] = value
        elif key in attn_params:
            attention[key] = value
        else:
            raise SpecError(f"Option '{key}' does not apply to '{parsed.canonical()}'.")
    if parsed.activation:
        attention["activation"] = parsed.activation
    return backbone, interflow, attention


def create_model(spec: str, num_classes: int = 10, in_chans: int = 3) -> AttnNet:
    """Build the model a spec names (random init; load weights with ``load_checkpoint``)."""
    parsed = parse_spec(spec)
    if not (isinstance(num_classes, int) and num_classes >= 1) or in_chans not in (1, 3):
        raise SpecError("num_classes must be a positive integer and in_chans 1 or 3.")
    backbone_opts, interflow_opts, attn_opts = _split_options(parsed)
    attn_cls = get_attn_class(parsed.attention)
    placement = parsed.effective_placement

    def make_attn(channels: int):
        if attn_cls is None:
            return None
        try:
            return attn_cls(channels, **attn_opts)
        except TypeError as err:
            raise SpecError(f"Bad option for '{parsed.attention}': {err}.") from err

    block_attn = make_attn if placement == "block" else (lambda channels: None)
    try:
        stem, stages, stage_channels = _ARCHS[parsed.arch](in_chans, block_attn, **backbone_opts)
    except TypeError as err:
        raise SpecError(f"Bad backbone option in '{spec}': {err}.") from err
    if placement == "stage" and attn_cls is not None:
        # BAM's authors place it at the bottlenecks (after every stage but the last); others after every stage
        last = len(stages) - 1 if getattr(attn_cls, "default_placement", "block") == "stage" else len(stages)
        for stage, channels in list(zip(stages, stage_channels, strict=True))[:last]:
            stage.add_module("attn", make_attn(channels))
    if parsed.interflow:
        if "hard_weights" in interflow_opts and not isinstance(interflow_opts["hard_weights"], list):
            interflow_opts["hard_weights"] = [interflow_opts["hard_weights"]]
        head = InterflowHead(stage_channels, num_classes, parsed.interflow, **interflow_opts)
    else:
        head = ClassifierHead(stage_channels[-1], num_classes)
    model = AttnNet(stem, stages, stage_channels, head, num_classes, in_chans, parsed.canonical())
    init_weights(model)
    gamma = _residual_bn_gamma(parsed, spec)
    if gamma is not None:
        residual_bns = [m for m in model.modules() if getattr(m, "residual_bn", False)]
        if not residual_bns:
            option = "zero_init_residual" if gamma == 0 else "residual_bn_gamma"
            raise SpecError(f"{option} needs residual branches that end in BatchNorm, which '{parsed.arch}' has not.")
        for bn in residual_bns:
            nn.init.constant_(bn.weight, gamma)
    return model


def _residual_bn_gamma(parsed: ModelSpec, spec: str) -> float | None:
    """The starting gamma of every residual branch's last BN that the spec's init options ask for (None: 1)."""
    zero_init = parsed.options.get("zero_init_residual", False)
    if not isinstance(zero_init, bool):
        raise SpecError(f"zero_init_residual must be true or false in '{spec}'.")
    if "residual_bn_gamma" not in parsed.options:
        return 0.0 if zero_init else None
    gamma = parsed.options["residual_bn_gamma"]
    if zero_init:
        raise SpecError(f"Give either zero_init_residual or residual_bn_gamma in '{spec}', not both.")
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma <= 1:
        raise SpecError(f"residual_bn_gamma must be a number above 0 and at most 1 in '{spec}'.")
    return float(gamma)


def list_archs() -> list[str]:
    return list(_ARCHS)


def list_models(include_interflow: bool = True) -> list[str]:
    """Every arch x attention spec (``se-felu`` included), plus each arch with the Interflow modes."""
    specs = []
    for arch in _ARCHS:
        for attention in list_attentions():
            specs.append(arch if attention == "none" else f"{arch}-{attention}")
            if attention == "se":
                specs.append(f"{arch}-se-felu")
        if include_interflow:
            specs += [f"{arch}-interflow-{mode}" for mode in MODES]
    return specs
