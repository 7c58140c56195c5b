"""Probes: what every attention module of a model did on one forward pass.

``probe(model, x)`` finds every ``AttentionModule`` (``attnviz.layers.taps``) by ``named_modules()``,
registers a forward hook on each of its ``AttnTap`` children for this one call (inside ``try``,
removed in ``finally``, also when the forward raises), runs the forward pass and returns a
``ProbeResult``: one ``SiteProbe`` per attention site, keyed by the module's qualified name
(``layer2.1.attn``; the Interflow head is ``head``), plus the logits and, optionally, the feature maps
of chosen layers. Every recorded tensor is a ``detach()``ed CPU copy, so the result is plain data that
outlives the call and never keeps a graph alive.

Cost when not recording: none. Taps are identity modules; hooks exist only during ``probe``.

Thread safety: the forward pass runs under ``attnviz.locks.model_lock(model)``, so two threads
probing one model are serialised and each gets its own records. The hooks also check the thread id,
so a plain (un-hooked, lock-free) inference that another thread runs on the same shared model at the
same moment is never recorded into this probe.

What each kind records (see ``SiteProbe``; shapes for a batch of B):
- ``se`` (SE and SE-FeLU, Hu et al. eq. (2)/(3)): ``channel_weights`` [B, C] = sigmoid output s;
  ``hidden`` [B, C/r] = the excitation's hidden pre-activation W1 z (dead units: <= 0 for all images).
- ``eca``: ``channel_weights`` [B, C].
- ``cbam``: ``channel_weights`` [B, C] = M_c (eq. (2)); ``spatial`` [B, 1, H, W] = M_s (eq. (3)).
- ``bam``: ``channel_logits`` [B, C] = M_c(F), ``spatial_logits`` [B, 1, H, W] = M_s(F),
  ``gate`` [B, C, H, W] = sigmoid(M_c + M_s) (eq. (2)); ``spatial`` = the gate averaged over channels
  [B, 1, H, W] (the effective spatial mask: BAM has no single spatial gate, this is our summary).
- ``sge``: ``spatial`` [B, G, H, W] = per-group gate sigmoid(a) (eq. (5)).
- ``lgam`` (eqs. (1)-(7)): ``group_channel_weights`` [B, C] = M_chan of every group concatenated
  (group g holds channels g*C/G ... (g+1)*C/G - 1); ``spatial`` [B, 1, H, W] = M_spat (eq. (6));
  ``a_prime_norm``, ``a_double_prime_norm`` and ``input_norm`` [B] = per-image L2 norms of A'
  (eq. (4)), A'' (eq. (7)) and the module input A.
- ``interflow`` (Cai et al. 2021): ``branch_logits`` [B, n, K] and ``branch_probs`` (softmax per
  branch); ``branch_weights`` = the effective aggregation weights (hard: the given [n]; soft: the
  learned [n]; per_class: the learned [n, K]); ``output`` [B, K] = the aggregated logits.
``taps`` always holds every tap's raw record by tap name (``channel``, ``hidden``, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnviz.errors import AttnvizError
from attnviz.layers.taps import AttentionModule, AttnTap
from attnviz.locks import borrowed, model_lock


@dataclass
class SiteProbe:
    """Records of one attention site on one forward pass (fields not produced by a kind are None)."""

    site: str
    kind: str
    module_type: str
    taps: dict[str, torch.Tensor] = field(default_factory=dict)
    channel_weights: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    group_channel_weights: torch.Tensor | None = None
    groups: int | None = None
    spatial: torch.Tensor | None = None
    channel_logits: torch.Tensor | None = None
    spatial_logits: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    a_prime_norm: torch.Tensor | None = None
    a_double_prime_norm: torch.Tensor | None = None
    input_norm: torch.Tensor | None = None
    branch_logits: torch.Tensor | None = None
    branch_probs: torch.Tensor | None = None
    branch_weights: torch.Tensor | None = None
    output: torch.Tensor | None = None
    mode: str | None = None

    @property
    def has_spatial_mask(self) -> bool:
        return self.spatial is not None

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a one-line description (CLI, tables): means/min/max of the main maps."""

        def stats(t: torch.Tensor) -> dict[str, float]:
            t = t.float()
            return {"mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}

        out: dict[str, Any] = {"site": self.site, "kind": self.kind}
        if self.channel_weights is not None:
            out["channel_weights"] = stats(self.channel_weights)
        if self.hidden is not None:
            out["hidden_units"] = int(self.hidden.shape[1])
            out["dead_hidden_units"] = int((self.hidden <= 0).all(dim=0).sum())
        if self.group_channel_weights is not None:
            out["group_channel_weights"] = stats(self.group_channel_weights)
            out["groups"] = self.groups
        if self.spatial is not None:
            out["spatial"] = stats(self.spatial) | {"shape": list(self.spatial.shape[1:])}
        if self.channel_logits is not None:
            out["channel_logits"] = stats(self.channel_logits)
        if self.a_prime_norm is not None:
            out["a_prime_norm"] = float(self.a_prime_norm.mean())
            out["a_double_prime_norm"] = float(self.a_double_prime_norm.mean())
            if self.input_norm is not None:
                out["input_norm"] = float(self.input_norm.mean())
        if self.branch_weights is not None:
            out["mode"] = self.mode
            out["branch_weights"] = self.branch_weights.tolist()
            out["branch_predictions"] = self.branch_probs.argmax(dim=-1).tolist()
        return out


@dataclass
class ProbeResult:
    """Everything one probe recorded: ``sites`` in module order, logits, optional feature maps."""

    sites: dict[str, SiteProbe]
    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=-1)

    def __getitem__(self, site: str) -> SiteProbe:
        return self.sites[site]

    def __iter__(self):
        return iter(self.sites.values())

    def __len__(self) -> int:
        return len(self.sites)

    def of_kind(self, *kinds: str) -> list[SiteProbe]:
        return [s for s in self.sites.values() if s.kind in kinds]

    def channel_weights(self) -> dict[str, torch.Tensor]:
        """Site -> channel weights [B, C] for every site that has them (LGAM: its group weights)."""
        out = {}
        for s in self.sites.values():
            weights = s.channel_weights if s.channel_weights is not None else s.group_channel_weights
            if weights is not None:
                out[s.site] = weights
        return out

    def spatial_maps(self) -> dict[str, torch.Tensor]:
        """Site -> native-resolution spatial map [B, 1 or G, h, w] for every site that has one."""
        return {s.site: s.spatial for s in self.sites.values() if s.spatial is not None}

    def summary(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self.sites.values()]

    def excitation_inputs(self) -> torch.Tensor:
        """[B, units]: every SE site's hidden pre-activation W1 z, side by side: the values the excitation's
        activation (ReLU, FeLU, ...) receives for each image. Empty ([B, 0]) for a model without one."""
        hidden = [s.hidden.float().flatten(1) for s in self.sites.values() if s.hidden is not None]
        return torch.cat(hidden, dim=1) if hidden else torch.zeros(self.logits.shape[0], 0)


def attention_sites(model: nn.Module) -> dict[str, AttentionModule]:
    """Qualified name -> attention module, in ``named_modules()`` order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AttentionModule)}


def _copy(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", copy=True)
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return _copy(t[0])
    return t


def _resolve(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise AttnvizError(f"the model has no layer named '{name}'") from err


class _Recorder:
    """Forward hooks that copy what passes through taps; records only the owning thread's calls."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.tap_records: dict[str, dict[str, torch.Tensor]] = {}
        self.input_norms: dict[str, torch.Tensor] = {}
        self.features: dict[str, torch.Tensor] = {}

    def tap_hook(self, site: str, tap_name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if threading.get_ident() == self.owner:
                # A tap that fires more than once in a forward keeps its last value.
                self.tap_records.setdefault(site, {})[tap_name] = _copy(output)

        return hook

    def input_norm_hook(self, site: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if threading.get_ident() == self.owner and inputs and isinstance(inputs[0], torch.Tensor):
                self.input_norms[site] = inputs[0].detach().flatten(1).norm(dim=1).cpu()

        return hook

    def feature_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if threading.get_ident() == self.owner:
                self.features[name] = _copy(output)

        return hook


def _tap_key(attr: str) -> str:
    return attr[len("tap_"):] if attr.startswith("tap_") else attr


def _build_site(site: str, module: AttentionModule, taps: dict[str, torch.Tensor],
                input_norm: torch.Tensor | None) -> SiteProbe:
    """One site's record from what its module declares (``AttentionModule.readouts``, ``derive_readouts``)."""
    record = SiteProbe(site=site, kind=module.attn_kind, module_type=type(module).__name__, taps=dict(taps))
    for tap_name, field_name in module.readouts.items():
        setattr(record, field_name, taps.get(tap_name))
    if module.records_input_norm:
        record.input_norm = input_norm
    module.derive_readouts(record)
    return record


def probe(model: nn.Module, x: torch.Tensor, feature_layers: Sequence[str] | Iterable[str] = (),
          *, eval_mode: bool = True, keep_feature_taps: bool = False) -> ProbeResult:
    """Run ``model(x)`` once with every attention tap recorded; see the module docstring.

    ``feature_layers``: qualified layer names whose outputs are recorded too (e.g. ``("layer1",)``).
    ``eval_mode``: run in eval mode (BN running statistics) and restore each submodule's previous
    mode afterwards. ``keep_feature_taps``: keep LGAM's full A'/A'' tensors in ``SiteProbe.taps``
    (otherwise only their norms are kept, which is what the app and the CLI show).
    """
    feature_layers = list(feature_layers)
    with borrowed(model) if eval_mode else model_lock(model):
        sites = attention_sites(model)
        feature_modules = {name: _resolve(model, name) for name in feature_layers}
        recorder = _Recorder()
        handles = []
        try:
            for site, module in sites.items():
                for attr, tap in module.named_children():
                    if isinstance(tap, AttnTap):
                        handles.append(tap.register_forward_hook(recorder.tap_hook(site, _tap_key(attr))))
                if module.records_input_norm:
                    handles.append(module.register_forward_pre_hook(recorder.input_norm_hook(site)))
            for name, module in feature_modules.items():
                handles.append(module.register_forward_hook(recorder.feature_hook(name)))
            with torch.no_grad():
                logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
    result_sites = {}
    for site, module in sites.items():
        taps = recorder.tap_records.get(site, {})
        record = _build_site(site, module, taps, recorder.input_norms.get(site))
        if module.feature_taps and not keep_feature_taps:
            record.taps = {k: v for k, v in record.taps.items() if k not in module.feature_taps}
        result_sites[site] = record
    return ProbeResult(sites=result_sites, logits=_copy(logits), features=recorder.features)


@dataclass
class DeadUnits:
    """Dead SE excitation units of one probe batch: per site (dead, total) and the overall fraction."""

    per_site: dict[str, tuple[int, int]]

    @property
    def dead(self) -> int:
        return sum(d for d, _ in self.per_site.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.per_site.values())

    @property
    def fraction(self) -> float:
        return self.dead / self.total if self.total else 0.0

    def site_fractions(self) -> dict[str, float]:
        return {site: d / t if t else 0.0 for site, (d, t) in self.per_site.items()}


def dead_units(result: ProbeResult) -> DeadUnits:
    """Count dead SE excitation units (FeLU paper, sec. 2: a ReLU unit whose input stays <= 0 outputs 0
    and gets no gradient).

    Definition: a hidden unit of an SE site is dead on a batch when its pre-activation W1 z is <= 0
    for *every* image of the batch. The same test is applied to SE-FeLU, where such a unit still
    passes a (negative) signal and a gradient; comparing the counts is the paper's argument.
    Use a fixed, reasonably large batch (e.g. 256 test images) so the count is stable.
    """
    per_site = {}
    for record in result.sites.values():
        if record.hidden is not None:
            dead = int((record.hidden <= 0).all(dim=0).sum())
            per_site[record.site] = (dead, int(record.hidden.shape[1]))
    return DeadUnits(per_site)


def dead_unit_fraction(result: ProbeResult) -> float:
    """Fraction of all SE hidden units (over every SE site) that are dead on the probe batch; 0.0 when
    the model has no SE site. See ``dead_units`` for the definition and per-site counts."""
    return dead_units(result).fraction
