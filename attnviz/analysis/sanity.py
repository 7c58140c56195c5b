"""Sanity checks for explanations (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

If a map barely changes when the network's weights are randomised, it explains the picture, not the
model. Two model-parameter randomisation tests, on a private deep copy of the model (the caller's model,
which may be a shared cached one, is never modified; the copy is taken under
``attnviz.locks.model_lock(model)`` so no other thread's hooks are copied with it):

- **cascading**: re-initialise the network from the logits down, one *step* at a time, keeping what was
  randomised before: the head (the logits layer; for Interflow the branch classifiers and the
  aggregation weights), then the last stage, ... the first stage, then the stem. ``granularity="block"``
  walks the stages block by block instead (a block = one residual block, or one conv with its BN for
  VGG; a stage-level attention module such as BAM goes with the block before it).
- **independent**: re-initialise each step alone, everything else trained.

At every step, for the same pictures and the same target classes (the trained model's predictions),
every explanation method (``attnviz.analysis.explanations.explain``) and every attention readout
(``attnviz.analysis.probes.probe``) is recomputed and compared with the trained model's:

- ``spearman``: Spearman rank correlation of the signed raw map (``Explanation.raw``: the CAM before
  its ReLU at the layer's resolution; the colour-summed attribution at input resolution), per image;
- ``spearman_abs``: the same for its absolute value (Adebayo et al. report both);
- ``ssim``: structural similarity (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01,
  K2 = 0.03, data range 1, reflected borders) of the [0, 1] heat maps;
- readouts, per attention site: the rank correlation of its channel weights (SE, ECA, CBAM's channel
  gate, LGAM's per-group weights), of its spatial mask (LGAM, CBAM, SGE, BAM's gate averaged over
  channels) and of Interflow's branch weights, keyed ``"<site>:channel"`` / ``":spatial"`` /
  ``":branch_weights"``.
A rank correlation of a constant map is undefined (NaN; means skip it and count it).

What "re-initialise" means: the weights the same spec gets from its own initialisation
(``create_model(model.spec)``: He-initialised convs, fresh BN statistics, SGE's 0/1, Interflow's 1/n,
every option of the spec), copied into the modules of the step. It is built under
``torch.manual_seed(REINIT_SEED_OFFSET + seed)``, not ``seed`` itself: the zoo and the studies train
from seeds 0, 1, 2, and a short run keeps some weights close to where they started (small biases
especially), so re-drawing the model's own initial weights would make parts of the trained model look
unchanged. The global RNG state is left as it was (``torch.random.fork_rng``).
A model without a spec falls back to each submodule's ``reset_parameters()`` under the same seed. Same
seed, same numbers.

Reading (``verdict``): after the whole network is random (the last cascading step) a method whose mean
``spearman_abs`` is still >= ``FAIL_AT`` (0.5) *barely changes* (fails the test); below ``PASS_BELOW``
(0.2) it *changes* (passes); in between it changes *partly*. The thresholds are ours; the paper judges
by eye and by these correlations. Its reference result: Gradient and Grad-CAM pass, Guided Backprop
(and Guided Grad-CAM) stay nearly unchanged, i.e. fail.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from attnviz.analysis.explanations import canonical_method, explain
from attnviz.analysis.probes import probe
from attnviz.analysis.similarity import map_similarity, rank_correlations, spearman, ssim  # noqa: F401 (public here too)
from attnviz.errors import AttnvizError
from attnviz.layers.taps import AttentionModule
from attnviz.locks import model_lock
from attnviz.models.registry import create_model

MODES = ("cascading", "independent")
GRANULARITIES = ("stage", "block")
METRICS = ("spearman", "spearman_abs", "ssim")
DEFAULT_METHODS = ("gradcam", "saliency", "guided_backprop", "integrated_gradients")
FAIL_AT = 0.5
PASS_BELOW = 0.2
REINIT_SEED_OFFSET = 104_729  # see the module docstring: never one of the training seeds


# ---------------------------------------------------------------------------------------------
# what gets randomised, in which order


def _owns_backbone_conv(module: nn.Module) -> bool:
    """True when ``module`` holds a convolution outside any attention module (starts a new block)."""

    if isinstance(module, AttentionModule):
        return False
    if isinstance(module, nn.Conv2d):
        return True
    return any(_owns_backbone_conv(child) for child in module.children())


def _has_parameters(model: nn.Module, names: Sequence[str]) -> bool:
    return any(True for name in names for _ in model.get_submodule(name).parameters())


def randomisation_steps(model: nn.Module, granularity: str = "stage") -> list[tuple[str, list[str]]]:
    """``[(label, [qualified module names]), ...]`` from the logits down (see the module docstring).

    Steps without parameters (VGG's identity stem) are left out.
    """
    if granularity not in GRANULARITIES:
        raise AttnvizError(f"unknown granularity '{granularity}'; use stage or block")
    stages = list(getattr(model, "stage_names", []) or [])
    children = dict(model.named_children())
    if not stages:
        # a model that is not an attnviz AttnNet: its top-level children, last first
        steps = [(name, [name]) for name in reversed(list(children))]
        return [s for s in steps if _has_parameters(model, s[1])]
    order = list(children)
    first, last = order.index(stages[0]), order.index(stages[-1])
    # after the last stage (the head), last first; then the stages; then what comes before them (the stem)
    steps: list[tuple[str, list[str]]] = [(name, [name]) for name in reversed(order[last + 1:])]
    for stage in reversed(stages):
        if granularity == "stage":
            steps.append((stage, [stage]))
            continue
        groups: list[list[str]] = []
        for child_name, child in model.get_submodule(stage).named_children():
            qualified = f"{stage}.{child_name}"
            if _owns_backbone_conv(child) or not groups:
                groups.append([qualified])
            else:
                groups[-1].append(qualified)
        steps += [(group[0], group) for group in reversed(groups)]
    steps += [(name, [name]) for name in reversed(order[:first])]
    steps += [(name, [name]) for name in order[first:last + 1] if name not in stages]  # between stages
    return [s for s in steps if _has_parameters(model, s[1])]


def _fresh_model(model: nn.Module, seed: int) -> nn.Module | None:
    """A freshly initialised model of the same spec (seeded, global RNG untouched), or None."""
    spec = getattr(model, "spec", None)
    if not spec:
        return None

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(REINIT_SEED_OFFSET + seed)
            fresh = create_model(str(spec), num_classes=int(model.num_classes), in_chans=int(model.in_chans))
    except (AttnvizError, AttributeError, TypeError, ValueError):
        return None
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    return fresh if ours == theirs else None


def reinitialise(model: nn.Module, names: Sequence[str], seed: int, fresh: nn.Module | None = None) -> None:
    """Re-initialise the modules ``names`` of ``model`` in place (call it on a copy only)."""
    if fresh is None:
        fresh = _fresh_model(model, seed)
    with torch.no_grad():
        if fresh is not None:
            for name in names:
                target = model.get_submodule(name)
                source = fresh.get_submodule(name).state_dict()
                device = next(iter(target.state_dict().values())).device if target.state_dict() else None
                target.load_state_dict({k: v.to(device) if device is not None else v for k, v in source.items()})
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(REINIT_SEED_OFFSET + seed)
            for name in names:
                for module in model.get_submodule(name).modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` taken under its lock, in eval mode, parameters frozen."""
    with model_lock(model):
        clone = copy.deepcopy(model)
    for module in clone.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    clone.eval()
    clone.requires_grad_(False)
    return clone


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SanityStep:
    """One depth of the test: what is random, and the maps and readouts there."""

    label: str
    randomised: list[str]
    heatmaps: dict[str, np.ndarray]  # method -> [N, H, W] in [0, 1]
    raw: dict[str, np.ndarray]  # method -> [N, h, w]
    predictions: np.ndarray  # [N]
    similarity: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> metric -> [N]
    readouts: dict[str, np.ndarray] = field(default_factory=dict)  # "site:part" -> [N] rank correlation


@dataclass
class SanityResult:
    """Every step of one randomisation test (step 0 = the trained model)."""

    spec: str
    mode: str
    granularity: str
    seed: int
    methods: list[str]
    targets: np.ndarray
    steps: list[SanityStep]

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    def curve(self, method: str, metric: str = "spearman_abs") -> list[float]:
        """Mean over images (NaNs skipped) of ``metric`` per step."""
        return [_nanmean(step.similarity[method][metric]) for step in self.steps]

    def readout_keys(self) -> list[str]:
        return list(self.steps[0].readouts) if self.steps else []

    def readout_curve(self, key: str) -> list[float]:
        return [_nanmean(step.readouts[key]) for step in self.steps]

    def verdicts(self, metric: str = "spearman_abs") -> dict[str, str]:
        """method -> ``changes`` | ``partly`` | ``barely changes`` (see the module docstring).

        Cascading: judged at the last step (everything random). Independent: at the step where the
        method changed most (a method that no single step changes barely changes)."""
        out = {}
        for method in self.methods:
            values = [v for v in self.curve(method, metric)[1:] if not math.isnan(v)]
            if not values:
                out[method] = "undefined"
                continue
            value = values[-1] if self.mode == "cascading" else min(values)
            out[method] = verdict(value)
        return out

    def summary(self) -> dict:
        """Plain numbers (no maps): per step and method the mean and standard error of every metric."""
        steps = []
        for step in self.steps:
            steps.append({
                "label": step.label, "randomised": list(step.randomised),
                "prediction_agreement": float(np.mean(step.predictions == self.targets)),
                "methods": {m: {metric: _mean_se(values) for metric, values in step.similarity[m].items()}
                            for m in self.methods},
                "readouts": {key: _mean_se(values) for key, values in step.readouts.items()},
            })
        return {"spec": self.spec, "mode": self.mode, "granularity": self.granularity, "seed": self.seed,
                "methods": list(self.methods), "images": int(len(self.targets)), "steps": steps,
                "verdicts": self.verdicts()}


def verdict(value: float) -> str:
    if value >= FAIL_AT:
        return "barely changes"
    if value < PASS_BELOW:
        return "changes"
    return "partly"


def _nanmean(values: np.ndarray) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else math.nan


def _mean_se(values: np.ndarray) -> dict:
    array = np.asarray(values, dtype=np.float64)
    finite = array[~np.isnan(array)]
    se = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
    return {"mean": float(finite.mean()) if finite.size else math.nan, "se": se,
            "n": int(finite.size), "undefined": int(array.size - finite.size)}


def describe(result: SanityResult, metric: str = "spearman_abs") -> str:
    """One sentence: which methods change with the weights and which barely do."""
    verdicts = result.verdicts(metric)
    groups: dict[str, list[str]] = {}
    for method, v in verdicts.items():
        final = result.curve(method, metric)[-1] if result.mode == "cascading" else min(
            [x for x in result.curve(method, metric)[1:] if not math.isnan(x)] or [math.nan])
        groups.setdefault(v, []).append(f"{method} ({final:.2f})")
    where = "with the whole network random" if result.mode == "cascading" else "at its most sensitive step"
    parts = []
    if groups.get("changes"):
        parts.append(f"{', '.join(groups['changes'])} change{'s' if len(groups['changes']) == 1 else ''} "
                     "with the weights (pass)")
    if groups.get("partly"):
        parts.append(f"{', '.join(groups['partly'])} change{'s' if len(groups['partly']) == 1 else ''} only partly")
    if groups.get("barely changes"):
        parts.append(f"{', '.join(groups['barely changes'])} barely change{'s' if len(groups['barely changes']) == 1 else ''}"
                     " (fail: they explain the picture more than the model)")
    if groups.get("undefined"):
        parts.append(f"{', '.join(groups['undefined'])}: undefined (constant maps)")
    return (f"Rank correlation of |map| with the trained model's, {where}: " + "; ".join(parts)
            + f" (pass below {PASS_BELOW:g}, fail at {FAIL_AT:g} or above).")


# ---------------------------------------------------------------------------------------------
# the tests


def _check_inputs(model: nn.Module, x: torch.Tensor, methods: Sequence[str], mode: str,
                  granularity: str) -> list[str]:

    if mode not in MODES:
        raise AttnvizError(f"unknown randomisation mode '{mode}'; use cascading or independent")
    if granularity not in GRANULARITIES:
        raise AttnvizError(f"unknown granularity '{granularity}'; use stage or block")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] < 1:
        raise AttnvizError("images must be a preprocessed batch tensor [B, C, H, W] with at least one image")
    expected = getattr(model, "in_chans", None)
    if expected and x.shape[1] != expected:
        raise AttnvizError(f"the model expects {expected} input channels, the images have {x.shape[1]}")
    canonical = list(dict.fromkeys(canonical_method(m) for m in methods))
    if not canonical:
        raise AttnvizError("name at least one explanation method")
    return canonical


def _readouts(result) -> dict[str, np.ndarray]:
    """'site:part' -> [N, ...] arrays of one probe (channel weights, spatial masks, branch weights)."""
    out: dict[str, np.ndarray] = {}
    batch = int(result.logits.shape[0])
    for site, weights in result.channel_weights().items():
        out[f"{site}:channel"] = weights.float().numpy()
    for site, spatial in result.spatial_maps().items():
        out[f"{site}:spatial"] = spatial.float().numpy()
    for record in result.of_kind("interflow"):
        if record.branch_weights is not None:
            weights = record.branch_weights.float().numpy()
            out[f"{record.site}:branch_weights"] = np.repeat(weights[None], batch, axis=0)
    return out


def _evaluate(model: nn.Module, x: torch.Tensor, targets: list[int], methods: list[str],
              layer: str | None) -> tuple[dict, dict, np.ndarray, dict]:

    heat, raw = {}, {}
    for method in methods:
        explanations = explain(model, x, target=targets, method=method, layer=layer, branches=False)
        heat[method] = np.stack([e.heatmap for e in explanations]).astype(np.float32)
        raw[method] = np.stack([e.raw for e in explanations]).astype(np.float32)
    result = probe(model, x)
    predictions = result.logits.argmax(dim=1).numpy()
    return heat, raw, predictions, _readouts(result)


def randomisation_test(model: nn.Module, x: torch.Tensor, *, methods: Sequence[str] = DEFAULT_METHODS,
                       mode: str = "cascading", granularity: str = "stage", seed: int = 0,
                       layer: str | None = None, progress=None) -> SanityResult:
    """Run the cascading or independent model-parameter randomisation test (module docstring).

    ``x``: a preprocessed batch [N, C, H, W]. ``layer``: the CAM layer (default: the model's last
    stage). ``progress(done, total, label)`` is called before each step. ``model`` is only read.
    """
    methods = _check_inputs(model, x, methods, mode, granularity)
    steps_plan = randomisation_steps(model, granularity)
    base = private_copy(model)
    device = next(base.parameters()).device if any(True for _ in base.parameters()) else torch.device("cpu")
    x = x.detach().to(device)
    with torch.no_grad():
        targets = base(x).argmax(dim=1).tolist()
    fresh = _fresh_model(base, seed)
    if fresh is not None:
        fresh.to(device)
    total = len(steps_plan) + 1
    report = progress or (lambda done, total, label: None)

    report(0, total, "trained")
    heat0, raw0, pred0, readouts0 = _evaluate(base, x, targets, methods, layer)
    steps = [SanityStep("trained", [], heat0, raw0, pred0,
                        {m: map_similarity(raw0[m], heat0[m], raw0[m], heat0[m]) for m in methods},
                        {k: rank_correlations(v, v) for k, v in readouts0.items()})]
    cascade = copy.deepcopy(base) if mode == "cascading" else None
    randomised: list[str] = []
    for index, (label, names) in enumerate(steps_plan, start=1):
        report(index, total, label)
        if mode == "cascading":
            reinitialise(cascade, names, seed, fresh)
            randomised += names
            current, done = cascade, list(randomised)
        else:
            current = copy.deepcopy(base)
            reinitialise(current, names, seed, fresh)
            done = list(names)
        heat, raw, pred, readouts = _evaluate(current, x, targets, methods, layer)
        similarity = {m: map_similarity(raw0[m], heat0[m], raw[m], heat[m]) for m in methods}
        readout_similarity = {k: rank_correlations(v, readouts[k]) for k, v in readouts0.items() if k in readouts}
        steps.append(SanityStep(label, done, heat, raw, pred, similarity, readout_similarity))
    report(total, total, "done")
    return SanityResult(spec=str(getattr(model, "spec", type(model).__name__)), mode=mode, granularity=granularity,
                        seed=int(seed), methods=methods, targets=np.asarray(targets), steps=steps)


def cascading_randomisation(model: nn.Module, x: torch.Tensor, **kwargs) -> SanityResult:
    """``randomisation_test(..., mode="cascading")``: from the logits down, cumulatively."""
    return randomisation_test(model, x, mode="cascading", **kwargs)


def independent_randomisation(model: nn.Module, x: torch.Tensor, **kwargs) -> SanityResult:
    """``randomisation_test(..., mode="independent")``: each step alone."""
    return randomisation_test(model, x, mode="independent", **kwargs)


def compare_models(reference: nn.Module, other: nn.Module, x: torch.Tensor, *,
                   methods: Sequence[str] = DEFAULT_METHODS, layer: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Map similarity of two models on the same pictures and the reference's predicted classes (the
    data-randomisation test compares a model trained on true labels with one trained on shuffled labels)."""
    methods = _check_inputs(reference, x, methods, "cascading", "stage")
    a, b = private_copy(reference), private_copy(other)
    x = x.detach()
    with torch.no_grad():
        targets = a(x).argmax(dim=1).tolist()
    heat_a, raw_a, _, _ = _evaluate(a, x, targets, methods, layer)
    heat_b, raw_b, _, _ = _evaluate(b, x, targets, methods, layer)
    return {m: map_similarity(raw_a[m], heat_a[m], raw_b[m], heat_b[m]) for m in methods}
