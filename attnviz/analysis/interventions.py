"""Interventions: override chosen attention readouts for the forward passes inside one ``with`` block.

Seeing a weight is not knowing what it does; switching it off and watching the prediction is.
``intervene(model, [Intervention(...), ...])`` validates every request first (an invalid one raises an
``AttnvizError`` of one sentence and leaves the model untouched), then registers one forward hook per
affected ``AttnTap`` (``attnviz.layers.taps``) that returns the replacement instead of the tap's value;
in ``finally`` (also when the block raises) every hook is removed. Parameters, buffers and modes are
never written, so outputs afterwards are bit-identical to outputs before. The hooks act only in the
thread that entered the block, which holds ``attnviz.locks.model_lock(model)`` for the whole block:
another thread's plain inference on the same shared model is unaffected, and two threads never
intervene on one model at once. Probes (``attnviz.analysis.probes.probe``) and explanations
(``attnviz.analysis.explanations.explain``) run inside the block see the overridden values.

Methods, by part of a site (site = the attention module's qualified name, e.g. ``layer2.1.attn``):

- channel weights ``[B, C]`` of SE / SE-FeLU, ECA and CBAM's channel gate (``tap_channel``):
  ``channel_ones`` (weights := 1, i.e. no channel attention), ``channel_mean`` (:= ``value`` [C], e.g. the
  dataset mean from :func:`readout_means`; without a value, each image's own mean over channels),
  ``channel_class_mean`` (:= ``value`` [K, C] row ``classes[b]`` for image b: the class average),
  ``channel_zero_topk`` (the ``k`` largest weights of each image := 0: drop the channels it relies on).
  LGAM's per-group channel weights feed its ladder directly, not through a tap, so they cannot be
  overridden; BAM's channel branch gives logits that only act through the joint gate (use spatial).
- spatial masks (``tap_spatial`` of LGAM [B, 1, H, W], CBAM [B, 1, H, W] and SGE [B, G, H, W]; BAM's
  joint gate ``tap_gate`` [B, C, H, W]): ``spatial_ones`` (mask := 1: the identity for CBAM and SGE, whose
  masks multiply; for LGAM's A'' = A' M + A and BAM's F + F M it makes every position alike but keeps the
  branch at full strength), ``spatial_mean`` (:= ``value``, a
  fixed map such as the dataset mean; without a value, each image's own spatial mean per channel or
  group, i.e. the same overall level with the "where" removed).
- Interflow branch weights (``head.tap_branch_weights``, [n] or per_class [n, K]): ``branch_off`` (branch
  ``branch`` := 0), ``branch_only`` (that branch := 1, every other := 0: the output is that branch's own
  logits).
``site_means=True`` in :func:`readout_means` gives what ``channel_mean`` / ``spatial_mean`` take.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attnviz.analysis.explanations import explain
from attnviz.analysis.probes import attention_sites, probe
from attnviz.errors import AttnvizError
from attnviz.locks import model_lock

CHANNEL_METHODS = ("channel_ones", "channel_mean", "channel_class_mean", "channel_zero_topk")
SPATIAL_METHODS = ("spatial_ones", "spatial_mean")
BRANCH_METHODS = ("branch_off", "branch_only")
METHODS = CHANNEL_METHODS + SPATIAL_METHODS + BRANCH_METHODS
# which tap each method overrides: the module declares it (AttentionModule.channel_gate_tap,
# spatial_mask_tap, branch_weights_tap)
LABELS = {
    "channel_ones": "channel weights -> 1 (attention off)",
    "channel_mean": "channel weights -> their mean",
    "channel_class_mean": "channel weights -> the class average",
    "channel_zero_topk": "zero the k most-weighted channels",
    "spatial_ones": "spatial mask -> 1 (every position alike)",
    "spatial_mean": "spatial mask -> its mean",
    "branch_off": "branch weight -> 0",
    "branch_only": "this branch alone",
}


@dataclass(frozen=True)
class Intervention:
    """One override: ``site`` (qualified module name), ``method`` (see the module docstring) and its
    arguments: ``k`` (channel_zero_topk), ``branch`` (0-based, branch_*), ``value`` (channel_mean /
    spatial_mean: a fixed replacement; channel_class_mean: the [K, C] table), ``classes`` (one class
    index per image, channel_class_mean)."""

    site: str
    method: str
    k: int | None = None
    branch: int | None = None
    value: Any = None
    classes: Sequence[int] | None = None

    def describe(self) -> str:
        text = LABELS.get(self.method, self.method)
        if self.method == "channel_zero_topk":
            text = f"zero the {self.k} most-weighted channels"
        if self.method in BRANCH_METHODS and self.branch is not None:
            text = f"branch {self.branch + 1} " + ("weight -> 0" if self.method == "branch_off" else "alone")
        return f"{self.site}: {text}"


def _tap_key(tap_attribute: str | None) -> str | None:
    """``tap_spatial`` -> ``spatial``: the key a probe records that tap's value under."""
    return tap_attribute[len("tap_"):] if tap_attribute else None


def applicable_methods(module: nn.Module) -> list[str]:
    """The methods that apply to one attention module (by the taps it declares overridable)."""
    methods: list[str] = []
    if getattr(module, "channel_gate_tap", None):
        methods += list(CHANNEL_METHODS)
    if getattr(module, "spatial_mask_tap", None):
        methods += list(SPATIAL_METHODS)
    if getattr(module, "branch_weights_tap", None):
        methods += list(BRANCH_METHODS)
    return methods


def intervention_sites(model: nn.Module) -> dict[str, dict]:
    """site -> {"kind", "methods", "channels", "branches"} for every site some method applies to."""

    out = {}
    for site, module in attention_sites(model).items():
        methods = applicable_methods(module)
        if methods:
            out[site] = {"kind": module.attn_kind, "methods": methods,
                         "channels": getattr(module, "channels", None),
                         "branches": getattr(module, "num_branches", None)}
    return out


def _why_not(module: nn.Module, method: str, site: str) -> str:
    kind = getattr(module, "attn_kind", "?")
    if method in CHANNEL_METHODS and kind == "lgam":
        return (f"{method} does not apply to {site} (LGAM): its per-group channel weights feed the ladder "
                "directly, so only its spatial mask can be overridden")
    if method in CHANNEL_METHODS and kind == "bam":
        return (f"{method} does not apply to {site} (BAM): its channel branch only acts through the joint "
                "gate, which spatial_ones / spatial_mean override")
    if method in CHANNEL_METHODS:
        return f"{method} does not apply to {site} ({kind}): it has no channel weights to override"
    if method in SPATIAL_METHODS:
        return f"{method} does not apply to {site} ({kind}): it has no spatial mask"
    return f"{method} does not apply to {site} ({kind}): it is not an Interflow head"


@dataclass
class _Plan:
    intervention: Intervention
    tap: nn.Module
    tap_name: str
    value: torch.Tensor | None


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as err:
        raise AttnvizError(f"the {what} must be an array of numbers") from err
    tensor = tensor.detach().float()
    if not torch.isfinite(tensor).all():
        raise AttnvizError(f"the {what} contains NaN or infinite values")
    return tensor


def _plan(model: nn.Module, intervention: Intervention) -> _Plan:
    if not isinstance(intervention, Intervention):
        raise AttnvizError("each intervention must be an attnviz.analysis.interventions.Intervention")
    sites = attention_sites(model)
    site, method = intervention.site, intervention.method
    if site not in sites:
        names = list(sites)
        listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise AttnvizError(f"the model has no attention site '{site}'"
                           + (f"; its sites are {listed}" if names else "; it has no attention sites"))
    if method not in METHODS:
        raise AttnvizError(f"unknown intervention '{method}'; choose one of {', '.join(METHODS)}")
    module = sites[site]
    if method not in applicable_methods(module):
        raise AttnvizError(_why_not(module, method, site))
    value = None
    if method in CHANNEL_METHODS:
        tap_name = module.channel_gate_tap
        channels = int(module.channels)
        if method == "channel_zero_topk":
            k = intervention.k
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= int(k) <= channels:
                raise AttnvizError(f"k must be a whole number from 1 to {channels} (the channels of {site}), got {k!r}")
        if method == "channel_mean" and intervention.value is not None:
            value = _as_tensor(intervention.value, "mean channel weights").reshape(-1)
            if value.numel() != channels:
                raise AttnvizError(f"{site} has {channels} channels but the mean weights given have {value.numel()}")
        if method == "channel_class_mean":
            if intervention.value is None or intervention.classes is None:
                raise AttnvizError("channel_class_mean needs the class-average table (value, [K, C]) and one class per image")
            value = _as_tensor(intervention.value, "class-average table")
            if value.dim() != 2 or value.shape[1] != channels:
                raise AttnvizError(f"the class-average table must be [classes, {channels}] for {site}, "
                                   f"got {list(value.shape)}")
            classes = list(intervention.classes)
            if any(not isinstance(c, (int, np.integer)) or not 0 <= int(c) < value.shape[0] for c in classes):
                raise AttnvizError(f"every class must be an index from 0 to {value.shape[0] - 1}")
    elif method in SPATIAL_METHODS:
        tap_name = module.spatial_mask_tap
        if method == "spatial_mean" and intervention.value is not None:
            value = _as_tensor(intervention.value, "mean spatial mask")
    else:
        tap_name = module.branch_weights_tap
        n = int(module.num_branches)
        b = intervention.branch
        if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or not 0 <= int(b) < n:
            raise AttnvizError(f"branch must be a whole number from 0 to {n - 1} ({site} has {n} branches), got {b!r}")
    return _Plan(intervention, getattr(module, tap_name), tap_name, value)


def _replacement(plan: _Plan, output: torch.Tensor) -> torch.Tensor:
    iv = plan.intervention
    method = iv.method
    if method in ("channel_ones", "spatial_ones"):
        return torch.ones_like(output)
    if method == "channel_mean":
        if plan.value is None:
            return output.mean(dim=1, keepdim=True).expand_as(output).clone()
        return plan.value.to(output.device, output.dtype).expand_as(output).clone()
    if method == "channel_class_mean":
        classes = torch.as_tensor([int(c) for c in iv.classes], device=output.device)
        if classes.numel() == 1:
            classes = classes.expand(output.shape[0])
        if classes.numel() != output.shape[0]:
            raise AttnvizError(f"channel_class_mean got {classes.numel()} classes for a batch of {output.shape[0]} images")
        return plan.value.to(output.device, output.dtype)[classes].clone()
    if method == "channel_zero_topk":
        top = output.topk(int(iv.k), dim=1).indices
        return output.scatter(1, top, 0.0)
    if method == "spatial_mean":
        if plan.value is None:
            return output.mean(dim=(2, 3), keepdim=True).expand_as(output).clone()
        value = plan.value.to(output.device, output.dtype)
        try:
            return value.expand_as(output).clone() if value.dim() == output.dim() else value.expand(output.shape).clone()
        except RuntimeError as err:
            raise AttnvizError(f"the mean spatial mask {list(value.shape)} does not fit the mask "
                               f"{list(output.shape[1:])} of {iv.site}") from err
    weights = torch.zeros_like(output) if method == "branch_only" else output.clone()
    weights[int(iv.branch)] = 1.0 if method == "branch_only" else 0.0
    return weights


@contextlib.contextmanager
def intervene(model: nn.Module, interventions: Intervention | Iterable[Intervention]) -> Iterator[nn.Module]:
    """Override the given readouts for every forward pass of this thread inside the block (see the
    module docstring); the model is restored exactly on exit, also after an exception."""
    items = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    if not items:
        raise AttnvizError("name at least one intervention")
    plans = [_plan(model, iv) for iv in items]
    seen: set[tuple[str, str]] = set()
    for plan in plans:
        key = (plan.intervention.site, plan.tap_name)
        if key in seen:
            raise AttnvizError(f"two interventions override the same readout of {plan.intervention.site}; give one")
        seen.add(key)
    owner = threading.get_ident()

    def hook_for(plan: _Plan):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor):
            if threading.get_ident() != owner:
                return None  # another thread's forward on a shared model: untouched
            return _replacement(plan, output)

        return hook

    with model_lock(model):
        handles = []
        try:
            for plan in plans:
                # prepend: runs before any recording hook (a probe inside the block sees the override)
                handles.append(plan.tap.register_forward_hook(hook_for(plan), prepend=True))
            yield model
        finally:
            for handle in handles:
                handle.remove()


# ---------------------------------------------------------------------------------------------
# what the replacements need, and the effect of one intervention


def readout_means(model: nn.Module, batches: Iterable[Any], *, num_classes: int | None = None) -> dict[str, dict]:
    """Dataset statistics of every overridable readout, for ``channel_mean`` / ``spatial_mean`` /
    ``channel_class_mean``: site -> {"channel": [C] mean, "channel_by_class": [K, C] (when labels are
    given), "spatial": the mean mask (LGAM/CBAM [1, H, W], SGE [G, H, W], BAM's gate [C, H, W]), "n"}.

    ``batches`` yields preprocessed images [B, C, H, W] or ``(images, labels)`` pairs. Sums are float64.
    """

    sites = {s: m for s, m in attention_sites(model).items() if applicable_methods(m)}
    sums: dict[str, dict[str, torch.Tensor]] = {s: {} for s in sites}
    class_sums: dict[str, torch.Tensor] = {}
    class_counts: torch.Tensor | None = None
    count = 0
    for batch in batches:
        images, labels = (batch if isinstance(batch, (tuple, list)) else (batch, None))
        result = probe(model, images)
        count += int(images.shape[0])
        if labels is not None:
            k = int(num_classes or getattr(model, "num_classes", 0) or 0)
            if not k:
                raise AttnvizError("class averages need the number of classes")
            labels = torch.as_tensor(labels).long().cpu()
            one_hot = torch.nn.functional.one_hot(labels, k).double()
            class_counts = one_hot.sum(0) if class_counts is None else class_counts + one_hot.sum(0)
        for site, module in sites.items():
            taps = result[site].taps
            channel_key = _tap_key(module.channel_gate_tap)
            if channel_key and channel_key in taps:
                w = taps[channel_key].double()
                sums[site]["channel"] = sums[site].get("channel", 0) + w.sum(0)
                if labels is not None:
                    class_sums[site] = class_sums.get(site, 0) + one_hot.T @ w
            spatial_key = _tap_key(module.spatial_mask_tap)
            if spatial_key and spatial_key in taps:
                sums[site]["spatial"] = sums[site].get("spatial", 0) + taps[spatial_key].double().sum(0)
    if count == 0:
        raise AttnvizError("the data gave no images")
    out: dict[str, dict] = {}
    for site in sites:
        entry: dict[str, Any] = {"n": count}
        for part, total in sums[site].items():
            entry[part] = (total / count).float()
        if site in class_sums and class_counts is not None:
            entry["channel_by_class"] = (class_sums[site] / class_counts.clamp_min(1)[:, None]).float()
        out[site] = entry
    return out


@dataclass
class InterventionEffect:
    """Predictions and heat maps of the same pictures without and with the interventions."""

    interventions: list[Intervention]
    probs_before: np.ndarray  # [N, K]
    probs_after: np.ndarray
    targets: list[int]  # the class the heat maps explain: the prediction before
    heatmaps_before: np.ndarray | None  # [N, H, W]
    heatmaps_after: np.ndarray | None
    method: str | None

    @property
    def predicted_before(self) -> np.ndarray:
        return self.probs_before.argmax(axis=1)

    @property
    def predicted_after(self) -> np.ndarray:
        return self.probs_after.argmax(axis=1)

    @property
    def changed(self) -> np.ndarray:
        return self.predicted_before != self.predicted_after


def intervention_effect(model: nn.Module, x: torch.Tensor, interventions: Intervention | Iterable[Intervention],
                        *, method: str | None = "gradcam", layer: str | None = None) -> InterventionEffect:
    """Probabilities and (``method`` not None) heat maps for ``x`` before and inside the interventions;
    both maps explain the class predicted before, so the map shows what the change did to that evidence."""

    items = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise AttnvizError("images must be a preprocessed batch tensor [B, C, H, W]")
    for iv in items:
        _plan(model, iv)  # validate before any compute
    with model_lock(model), torch.no_grad():
        probs_before = torch.softmax(model(x).float(), dim=1).cpu().numpy()
    targets = probs_before.argmax(axis=1).tolist()
    before_maps = after_maps = None
    if method is not None:
        before = explain(model, x, target=targets, method=method, layer=layer, branches=False)
        before_maps = np.stack([e.heatmap for e in before])
    with intervene(model, items):
        with torch.no_grad():
            probs_after = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        if method is not None:
            after = explain(model, x, target=targets, method=method, layer=layer, branches=False)
            after_maps = np.stack([e.heatmap for e in after])
    return InterventionEffect(items, probs_before, probs_after, targets, before_maps, after_maps, method)


def predict(model: nn.Module, images: torch.Tensor, interventions: Sequence[Intervention] = (), *,
            batch_size: int = 500) -> torch.Tensor:
    """Predicted classes [N] for preprocessed ``images`` (in batches), inside the interventions if any."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        if interventions:
            with intervene(model, interventions), torch.no_grad():
                out.append(model(batch).argmax(dim=1).cpu())
        else:
            with model_lock(model), torch.no_grad():
                out.append(model(batch).argmax(dim=1).cpu())
    if not out:
        raise AttnvizError("the data gave no images")
    return torch.cat(out)


def accuracy_with(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  interventions: Sequence[Intervention] = (), *, reference: torch.Tensor | None = None) -> dict:
    """Top-1 accuracy on preprocessed ``images`` inside the interventions, the drop from the unmodified
    model's accuracy (paired over images: mean and standard error, in points of accuracy) and the share
    of predictions that changed. ``reference``: the unmodified model's predictions, if already known."""
    labels = torch.as_tensor(labels).cpu()
    plain = predict(model, images) if reference is None else reference
    changed = predict(model, images, interventions) if interventions else plain
    before = (plain == labels).double()
    after = (changed == labels).double()
    diff = before - after
    n = int(labels.numel())
    se = float(diff.std(unbiased=True) / n**0.5) if n > 1 else float("nan")
    return {"accuracy": float(after.mean()), "accuracy_before": float(before.mean()), "drop": float(diff.mean()),
            "drop_se": se, "changed": float((changed != plain).double().mean()), "n": n}
