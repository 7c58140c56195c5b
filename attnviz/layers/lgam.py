"""LGAM: Lightweight Group-wise Attention Module (Zhang, Li & Yang 2020), equations (1)-(7).

Input A [B, C, H, W] is split along channels into G groups x_k of C' = C/G channels.
- Channel attention per group, eqs. (1)-(3):
      s = GAP(x)                                  (1)
      M_chan = sigmoid(relu(BN(MLP(s))))          (2)   MLP: C' -> C'/r -> C'
      F_chan(x) = M_chan * x + x                  (3)
- Ladder between groups, eq. (4): y_1 = F_chan(x_1), y_k = F_chan(x_k + y_{k-1}); A' = concat(y_k).
- Spatial attention, eqs. (5)-(6): c_spat = sum over channels of A'; M_spat = sigmoid(relu(c_spat)).
- Fusion, eq. (7): A'' = A' * M_spat + A.

Choices where the paper is silent (all arguments):
- ``shared_mlp=False``: each group has its own MLP+BN. The paper writes one F_chan but draws one CA
  box per group; separate weights give the parameter increase closest to table 3
  (see ``attnviz params``). ``shared_mlp=True`` uses one MLP+BN for every group.
- ``mlp_activation="relu"``: the activation inside the MLP's hidden layer (the paper says "an MLP with
  one hidden layer" and does not name it).
- ``min_hidden=1``: hidden width is max(min_hidden, C'/r).
- ``ladder=True``: eq. (4); ``ladder=False`` applies F_chan to each group independently (ablation).
- ``spatial_reduce="sum"`` is eq. (5); ``"mean"`` divides by C (keeps the sigmoid out of saturation
  for wide layers) as an ablation.
Note sigmoid(relu(.)) >= 0.5: both of the paper's gates only scale between 0.5 and 1, and with the
residual terms of (3) and (7) the module can amplify but never suppress below half.
Trainability (measured, ``reports/modules``): each F_chan multiplies its input by 1.5-2 and the ladder
feeds every group's output into the next, so the last group carries up to ~2^G times the first; at
initialisation a ResNet-20's stage outputs are ~5x larger with LGAM (std 6.0 vs 1.2 at layer3:
``scripts/init_scale_probe.py``; tests/test_layers.py checks > 3x). With the study's small-budget recipe 2 of 3 seeds of the paper's
LGAM stalled near chance, none with ``ladder=False``.
Remedy (issue 11; the module itself unchanged): start the last BN of every residual branch at a small
gamma, so the ladder's gain cannot compound at initialisation. ``zero_init_residual=true`` (gamma = 0,
Goyal et al. 2017) starts every block as the identity: 0 of 3 small-budget seeds stalled
(reports/modules, ``lgam-zeroinit``), but zero-init also slows the plain network's start (``none-zeroinit``),
and the zoo's first LGAM trained that way reached 88.19% at 100 epochs (with the mean below), 0.31 under
the bar. ``residual_bn_gamma=0.25`` instead starts each LGAM branch near a plain branch's scale (stage
std 1.05 vs 1.17; tests/test_models.py checks it): 0 of 3 stalled (``lgam-gamma``, ``lgam-mean-gamma``).
Eq. (5)'s channel sum still drives M_spat to its bounds for most positions in trained networks (the
study reports the saturated fraction); ``spatial_reduce="mean"`` lowers it (83% -> 31% at gamma 0.25) at
a lower small-budget error (62.33 -> 60.73%). The zoo entry uses both
(``resnet20-lgam:residual_bn_gamma=0.25,spatial_reduce=mean``; its card's ``zoo_note`` gives the measured
numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.activations import get_activation
from attnviz.layers.taps import AttentionModule, AttnTap

FLAT_TOLERANCE = 1e-3
OFF_TOLERANCE = 1e-6  # sigmoid(relu(z)) for z <= 0 is 0.5 exactly in float32; this only absorbs rounding


def spatial_map_state(spatial_map) -> str:
    """What one M_spat (eq. (6), any array or tensor of one picture's map) does: ``"varies"`` over positions,
    ``"off"`` (exactly 0.5 everywhere: eq. (5)'s sum is <= 0 at every position, the ReLU makes it 0, the
    site boosts nothing), ``"saturated"`` (1.0 everywhere: the sum is large at every position) or
    ``"flat"`` (one other value everywhere)."""
    values = torch.as_tensor(spatial_map, dtype=torch.float32)
    low, high = float(values.min()), float(values.max())
    if high - low >= FLAT_TOLERANCE:
        return "varies"
    if high < 0.5 + FLAT_TOLERANCE:
        return "off"
    if low > 1.0 - FLAT_TOLERANCE:
        return "saturated"
    return "flat"


@dataclass(frozen=True)
class GateUsage:
    """How one LGAM site's two gates behave over a batch of pictures (see :func:`gate_usage`)."""

    pictures: int
    channel_gates: int
    dead_channel_gates: int  # M_chan at 0.5 for every picture: eq. (2)'s ReLU input <= 0 each time
    spatial_states: dict[str, int]  # pictures whose M_spat is off / saturated / flat / varies
    live_positions: float  # share of (picture, position) pairs where M_spat passes a gradient

    @property
    def dead_channel_fraction(self) -> float:
        return self.dead_channel_gates / self.channel_gates if self.channel_gates else 0.0


@dataclass(frozen=True)
class ModelGateUsage:
    """:class:`GateUsage` of every LGAM site of one model on the same pictures, and the model-wide counts."""

    per_site: dict[str, GateUsage]

    @property
    def pictures(self) -> int:
        return next(iter(self.per_site.values())).pictures if self.per_site else 0

    @property
    def frozen_sites(self) -> list[str]:
        """Sites whose spatial map is off or saturated for every picture: no picture trains that map."""
        return [site for site, usage in self.per_site.items()
                if usage.spatial_states["off"] + usage.spatial_states["saturated"] == usage.pictures]

    @property
    def dead_channel_gates(self) -> int:
        return sum(usage.dead_channel_gates for usage in self.per_site.values())

    @property
    def channel_gates(self) -> int:
        return sum(usage.channel_gates for usage in self.per_site.values())


def gate_usage(group_channel_weights, spatial_maps) -> GateUsage:
    """Which of one site's gates can still learn, from its readouts on a batch of pictures.

    ``group_channel_weights`` [B, C] is M_chan of eq. (2) for every group, ``spatial_maps`` [B, 1, H, W]
    is M_spat of eq. (6). Both gates are sigmoid(relu(z)), whose derivative is 0 where z <= 0 (the gate
    sits at exactly 0.5) and ~0 where the sigmoid saturates (the gate sits at 1). So:
    - a channel gate is *dead* on the batch when it is 0.5 for every picture (the definition
      :func:`attnviz.analysis.probes.dead_units` uses for SE's hidden units): no picture of the batch sends a
      gradient into its MLP and BN through it;
    - a spatial position is *live* when 0.5 < M_spat < 1 - ``FLAT_TOLERANCE`` (dM/dz = M(1 - M) > ~1e-3);
    - each picture's whole map is classified by :func:`spatial_map_state`.
    Use a fixed, reasonably large batch (e.g. 250 test pictures) so the counts are stable.
    """
    weights = torch.as_tensor(group_channel_weights, dtype=torch.float32)
    maps = torch.as_tensor(spatial_maps, dtype=torch.float32)
    if weights.dim() != 2 or maps.dim() != 4 or weights.shape[0] != maps.shape[0] or maps.shape[0] == 0:
        raise ValueError("gate_usage needs channel weights [B, C] and spatial maps [B, 1, H, W] of the same B >= 1 "
                         "pictures.")
    dead = int((weights <= 0.5 + OFF_TOLERANCE).all(dim=0).sum())
    states = {state: 0 for state in ("off", "saturated", "flat", "varies")}
    for picture_map in maps[:, 0]:
        states[spatial_map_state(picture_map)] += 1
    live = (maps > 0.5 + OFF_TOLERANCE) & (maps < 1.0 - FLAT_TOLERANCE)
    return GateUsage(pictures=int(maps.shape[0]), channel_gates=int(weights.shape[1]), dead_channel_gates=dead,
                     spatial_states=states, live_positions=float(live.float().mean()))


class GroupChannelAttention(nn.Module):
    """F_chan of eqs. (1)-(3) for one group: returns (M_chan * x + x, M_chan)."""

    def __init__(self, group_channels: int, reduction: int, min_hidden: int, mlp_activation: str):
        super().__init__()
        hidden = max(min_hidden, group_channels // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(group_channels, hidden), get_activation(mlp_activation), nn.Linear(hidden, group_channels)
        )
        self.bn = nn.BatchNorm1d(group_channels)
        self.act = nn.ReLU()
        self.gate = nn.Sigmoid()

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.act(self.bn(self.mlp(x.mean(dim=(2, 3))))))


class LGAM(AttentionModule):
    attn_kind = "lgam"
    readouts: ClassVar[dict[str, str]] = {"group_channel": "group_channel_weights", "spatial": "spatial"}
    spatial_mask_tap = "tap_spatial"  # the per-group channel weights feed the ladder directly
    records_input_norm = True
    feature_taps = ("a_prime", "output")
    # its per-group slicing and channel reductions force layout copies in channels_last (issue 11's
    # AVX512-BF16 measurement: slower than contiguous under bf16; benchmarks/trainer_throughput.py)
    channels_last_on_cpu_bf16 = False

    def derive_readouts(self, record) -> None:
        # A' (eq. (4)) and A'' (eq. (7)) are [B, C, H, W]; probes keep their per-image norms
        record.groups = self.groups
        if "a_prime" in record.taps:
            record.a_prime_norm = record.taps["a_prime"].flatten(1).norm(dim=1)
        if "output" in record.taps:
            record.a_double_prime_norm = record.taps["output"].flatten(1).norm(dim=1)

    def __init__(
        self,
        channels: int,
        groups: int = 4,
        reduction: int = 16,
        ladder: bool = True,
        shared_mlp: bool = False,
        mlp_activation: str = "relu",
        min_hidden: int = 1,
        spatial_reduce: str = "sum",
    ):
        super().__init__()
        if groups < 1 or channels % groups:
            raise SpecError(f"LGAM needs the channel count ({channels}) to be divisible by groups ({groups}).")
        if spatial_reduce not in ("sum", "mean"):
            raise SpecError("LGAM spatial_reduce must be 'sum' (eq. (5)) or 'mean'.")
        self.channels = channels
        self.groups = groups
        self.group_channels = channels // groups
        self.reduction = reduction
        self.ladder = ladder
        self.shared_mlp = shared_mlp
        self.spatial_reduce = spatial_reduce
        count = 1 if shared_mlp else groups
        self.channel_attention = nn.ModuleList(
            GroupChannelAttention(self.group_channels, reduction, min_hidden, mlp_activation) for _ in range(count)
        )
        self.tap_group_channel = AttnTap("group_channel")
        self.tap_a_prime = AttnTap("a_prime")
        self.spatial_act = nn.ReLU()
        self.spatial_gate = nn.Sigmoid()
        self.tap_spatial = AttnTap("spatial")
        self.tap_output = AttnTap("output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.group_channels, dim=1)
        outputs, group_weights = [], []
        previous = None
        for k, x_k in enumerate(groups):
            attention = self.channel_attention[0 if self.shared_mlp else k]
            inp = x_k if (previous is None or not self.ladder) else x_k + previous  # eq. (4)
            channel_weights = attention.weights(inp)
            y_k = inp * channel_weights[:, :, None, None] + inp  # eq. (3)
            outputs.append(y_k)
            group_weights.append(channel_weights)
            previous = y_k
        self.tap_group_channel(torch.cat(group_weights, dim=1))
        a_prime = self.tap_a_prime(torch.cat(outputs, dim=1))
        if self.spatial_reduce == "sum":
            spatial_logits = a_prime.sum(dim=1, keepdim=True)  # eq. (5)
        else:
            spatial_logits = a_prime.mean(dim=1, keepdim=True)
        spatial_map = self.tap_spatial(self.spatial_gate(self.spatial_act(spatial_logits)))  # eq. (6)
        return self.tap_output(a_prime * spatial_map + x)  # eq. (7)


def spatial_reduce_of(model: nn.Module) -> str | None:
    """How ``model``'s LGAM modules pool the channels in eq. (5): "sum" (the paper's) or "mean"; None
    when it has no LGAM module."""
    return next((m.spatial_reduce for m in model.modules() if isinstance(m, LGAM)), None)
