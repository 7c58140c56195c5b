"""Explanations behind one call: CAMs (pytorch-grad-cam), attributions (captum), faithfulness metrics,
the attention modules' own masks, and class-wise excitation profiles.

``explain(models, images, target, method, layer)`` returns one ``Explanation`` per (model, image,
target[, Interflow branch]): a heat map in [0, 1] at input resolution, the raw map, the class
explained, the layer, the method and the model's probabilities.

Methods (the libraries do the work; nothing here re-implements them):
- CAMs from pytorch-grad-cam: ``gradcam`` (Selvaraju et al. 2017), ``gradcam++`` (Chattopadhay et
  al. 2018), ``xgradcam`` (Fu et al. 2020), ``hirescam`` (Draelos & Carin 2020), ``layercam`` (Jiang
  et al. 2021), ``eigencam`` (Muhammad & Yeasin 2020; class-agnostic), ``scorecam`` (Wang et al.
  2020). ``raw`` is the library's map at the layer's resolution before its ReLU and min-max scaling
  (captured from ``get_cam_image``); ``heatmap`` is the library's output.
- Attributions from captum: ``integrated_gradients`` (Sundararajan et al. 2017; baseline = zeros in
  normalised space, i.e. the dataset's mean colour; 32 steps), ``saliency`` (Simonyan et al. 2014),
  ``guided_backprop`` (Springenberg et al. 2015), ``occlusion`` (Zeiler & Fergus 2014; a square
  window of ~1/8 of the side, stride half of it, zeros = mean colour). ``raw`` is the attribution
  summed over colour channels at input resolution (signed); ``heatmap`` is its positive part for
  the signed methods (IG, occlusion: evidence *for* the class) and its magnitude for the gradient
  methods (saliency, guided backprop), divided by its maximum.

Layers: ``layer=None`` uses ``model.default_cam_layer`` (the last stage's output); any qualified
module name works; both are resolved with ``get_submodule`` (never ``eval``). Interflow models also
get one map per branch (``branch=i``): the branch's stage output as the layer and the branch's own
logits (class = the same target class) as the score.

Shared models: every call holds ``attnviz.locks.model_lock(model)`` for the whole time it hooks or
back-propagates that model; a ``GradCAM`` (or captum) object is created for the one call inside
``with`` and never cached. For CAMs a forward hook (registered for the call, before the library's)
makes the target layer's output a leaf that requires grad: the library then gets the activations'
gradients although no parameter requires grad, and the backward pass stops at that layer (a CAM
costs about one forward pass plus the head's backward). Captum methods take gradients w.r.t. an
input that requires grad. For the duration of the call the parameters' ``requires_grad`` flags are
switched off (no weight gradients are computed or accumulated) and each submodule's train/eval mode
is restored afterwards, so a shared read-only model is left exactly as it was.

Batching: one library call per (model, method, layer) for the whole image batch (top-k targets
replicate the batch), so 8 images cost far less than 8 calls (see ``benchmarks/explain_latency.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.errors import AttnvizError
from attnviz.locks import model_lock
from attnviz.probes import probe

# captum announces (once per process) that GuidedBackprop hooks ReLUs; we remove them every call.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")

CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
ATTRIBUTION_METHODS = ("integrated_gradients", "saliency", "guided_backprop", "occlusion")
METHODS = CAM_METHODS + ATTRIBUTION_METHODS
_ALIASES = {
    "grad-cam": "gradcam", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam++": "gradcam++",
    "score-cam": "scorecam", "layer-cam": "layercam", "eigen-cam": "eigencam", "ig": "integrated_gradients",
    "integratedgradients": "integrated_gradients", "integrated-gradients": "integrated_gradients",
    "guidedbackprop": "guided_backprop", "guided-backprop": "guided_backprop",
}


@dataclass
class Explanation:
    """One heat map: ``heatmap`` [H, W] in [0, 1] at input resolution and ``raw`` (see module doc)."""

    model_name: str
    method: str
    layer: str | None
    target: int
    image_index: int
    heatmap: np.ndarray
    raw: np.ndarray
    probs: np.ndarray
    rank: int = 0  # 0 = the first target of this image (top-k: 0 is the top class)
    branch: int | None = None  # Interflow: which branch's own map (None = the model's output)

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def target_prob(self) -> float:
        return float(self.probs[self.target])


def canonical_method(method: str) -> str:
    key = method.strip().lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise AttnvizError(f"unknown explanation method '{method}'; choose one of {', '.join(METHODS)}")
    return key


def _named_models(models: Any) -> list[tuple[str, nn.Module]]:
    if isinstance(models, nn.Module):
        models = [models]
    if isinstance(models, Mapping):
        return [(str(name), model) for name, model in models.items()]
    named, seen = [], {}
    for model in models:
        name = str(getattr(model, "spec", "") or type(model).__name__)
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name}#{seen[name]}", model))
    return named


def _resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    name = layer or getattr(model, "default_cam_layer", None)
    if not name:
        raise AttnvizError("the model has no default_cam_layer; name a layer to explain")
    try:
        return name, model.get_submodule(name)
    except AttributeError as err:
        raise AttnvizError(f"the model has no layer named '{name}'") from err


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def borrowed(model: nn.Module) -> Iterator[nn.Module]:
    """Hold the model's lock; inside, parameters do not require grad, the model may be put in eval mode,
    and gradients are enabled (also under a caller's ``torch.no_grad()``, ``set_grad_enabled(False)``
    or ``inference_mode()``: an explanation back-propagates); on exit every flag, mode and the caller's
    grad state are restored exactly."""
    with model_lock(model), torch.inference_mode(False), torch.enable_grad():
        # Only what differs is recorded and restored (shared app models are already frozen and in
        # eval mode, so this costs next to nothing for them).
        trainable = [p for p in model.parameters() if p.requires_grad]
        training = [m for m in model.modules() if m.training]
        try:
            for p in trainable:
                p.requires_grad_(False)
            for m in training:
                m.training = False
            yield model
        finally:
            for p in trainable:
                p.requires_grad_(True)
            for m in training:  # (pytorch-grad-cam's constructor also calls model.eval())
                m.training = True


class _BranchLogits(nn.Module):
    """Interflow branch ``index``'s own logits [B, K] as a model output (for CAM targets)."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, branch_logits = self.model.forward_with_branches(x)
        return branch_logits[:, self.index]


class _ClassScore:
    """pytorch-grad-cam target protocol: the logit of a fixed class, or of the row's top class."""

    def __init__(self, category: int | None):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        category = int(model_output.argmax(-1)) if self.category is None else self.category
        return model_output[..., category]


def _targets_for(target: Any, logits: torch.Tensor | None, batch: int) -> list[list[int | None]]:
    """Per image, the classes to explain (``None`` = predicted, resolved by the library's output)."""
    if isinstance(target, str):
        if target != "predicted":
            raise AttnvizError(f"unknown target '{target}'; use 'predicted', a class index or ('topk', k)")
        return [[None] for _ in range(batch)]
    if isinstance(target, (tuple, list)) and len(target) == 2 and target[0] == "topk":
        k = int(target[1])
        if k < 1 or logits is None or k > logits.shape[1]:
            raise AttnvizError(f"top-k needs 1 <= k <= number of classes, got k={k}")
        return logits.topk(k, dim=1).indices.tolist()
    if isinstance(target, (int, np.integer)):
        return [[int(target)] for _ in range(batch)]
    if isinstance(target, Sequence) and len(target) == batch:
        return [[int(t)] for t in target]
    raise AttnvizError(f"unknown target {target!r}; use 'predicted', a class index or ('topk', k)")


def _check_classes(classes: list[list[int | None]], num_classes: int) -> None:
    for row in classes:
        for c in row:
            if c is not None and not 0 <= c < num_classes:
                raise AttnvizError(f"class {c} does not exist; the model has classes 0..{num_classes - 1}")


_silenced_scorecam = False


def _cam_class(method: str):
    global _silenced_scorecam
    import pytorch_grad_cam as pgc

    if method == "scorecam" and not _silenced_scorecam:
        # ScoreCAM draws a tqdm bar per image on stderr; the CLI and the app report progress themselves.
        from pytorch_grad_cam import score_cam

        class _Quiet:
            @staticmethod
            def tqdm(iterable, *args, **kwargs):
                return iterable

        score_cam.tqdm = _Quiet
        _silenced_scorecam = True
    return {
        "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
        "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM,
    }[method]


def _run_cam(method: str, model: nn.Module, layer_module: nn.Module, x: torch.Tensor,
             classes: list[int | None]) -> tuple[np.ndarray, np.ndarray, torch.Tensor, list[int]]:
    """(heatmaps [N, H, W], raw [N, h, w], outputs [N, K], explained classes) for one library call."""
    cam_class = _cam_class(method)
    raws: list[np.ndarray] = []

    def start_graph_at_layer(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # The layer's output becomes a leaf that requires grad, so the backward pass runs only from
        # the score down to this layer (what CAMs need) instead of through the whole network to the
        # input; the gradient w.r.t. this output is unchanged. Registered before the library's own
        # hooks, which therefore see (and hook their gradient on) this leaf.
        return output.detach().requires_grad_(True)

    handle = layer_module.register_forward_hook(start_graph_at_layer)
    try:
        with cam_class(model=model, target_layers=[layer_module]) as cam:
            original_get_cam_image = cam.get_cam_image

            def recording_get_cam_image(*args, **kwargs):
                raw = original_get_cam_image(*args, **kwargs)
                raws.append(np.asarray(raw, dtype=np.float32))
                return raw

            cam.get_cam_image = recording_get_cam_image
            targets = [_ClassScore(c) for c in classes]
            heatmaps = cam(input_tensor=x.detach(), targets=targets)
            outputs = cam.outputs.detach().float().cpu()
    finally:
        handle.remove()
    explained = [int(outputs[i].argmax()) if c is None else c for i, c in enumerate(classes)]
    return np.asarray(heatmaps, dtype=np.float32), raws[0], outputs, explained


def _run_attribution(method: str, forward: nn.Module, x: torch.Tensor,
                     classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    from captum import attr

    x = x.detach().clone().requires_grad_(method != "occlusion")
    target = torch.tensor(classes, device=x.device)
    if method == "integrated_gradients":
        attribution = attr.IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=32, internal_batch_size=256)
    elif method == "saliency":
        attribution = attr.Saliency(forward).attribute(x, target=target, abs=True)
    elif method == "guided_backprop":
        attribution = attr.GuidedBackprop(forward).attribute(x, target=target)
    else:
        side = min(x.shape[-2:])
        window = max(2, side // 8)
        stride = max(1, window // 2)
        attribution = attr.Occlusion(forward).attribute(
            x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
            baselines=0.0, target=target, perturbations_per_eval=64)
    raw = attribution.detach().float().sum(dim=1).cpu().numpy()
    if method in ("saliency", "guided_backprop"):
        evidence = np.abs(raw)
    else:
        evidence = np.maximum(raw, 0.0)
    peak = evidence.reshape(len(evidence), -1).max(axis=1).reshape(-1, 1, 1)
    heatmaps = np.where(peak > 0, evidence / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)
    return heatmaps, raw.astype(np.float32)


def _explain_one_model(name: str, model: nn.Module, x: torch.Tensor, target: Any, method: str,
                       layer: str | None, branches: bool) -> list[Explanation]:
    device = _device(model)
    batch = x.shape[0]
    results: list[Explanation] = []
    with borrowed(model):
        x = x.to(device).clone()  # an inference-mode tensor becomes one autograd can use
        needs_logits = isinstance(target, (tuple, list)) and len(target) == 2 and target[0] == "topk"
        needs_logits = needs_logits or (method in ATTRIBUTION_METHODS and isinstance(target, str))
        logits = None
        if needs_logits:
            with torch.no_grad():
                logits = model(x).float().cpu()
        per_image = _targets_for(target, logits, batch)
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        if num_classes:
            _check_classes(per_image, num_classes)
        if logits is not None:
            per_image = [[int(logits[i].argmax()) if c is None else c for c in row] for i, row in enumerate(per_image)]
        # Flatten (image, rank) pairs into one batch: image i repeated once per target.
        pairs = [(i, rank, c) for i, row in enumerate(per_image) for rank, c in enumerate(row)]
        index = torch.tensor([i for i, _, _ in pairs], device=device)
        x_rep = x.index_select(0, index)
        classes = [c for _, _, c in pairs]

        if method in CAM_METHODS:
            layer_name, layer_module = _resolve_layer(model, layer)
            heatmaps, raws, outputs, explained = _run_cam(method, model, layer_module, x_rep, classes)
            probs = torch.softmax(outputs, dim=1).numpy()
        else:
            layer_name = None
            heatmaps, raws = _run_attribution(method, model, x_rep, classes)  # classes resolved above
            explained = classes
            if logits is None:
                with torch.no_grad():
                    logits = model(x).float().cpu()
            probs = torch.softmax(logits, dim=1).numpy()[[i for i, _, _ in pairs]]
        for j, (i, rank, _) in enumerate(pairs):
            results.append(Explanation(name, method, layer_name, int(explained[j]), i, heatmaps[j], raws[j],
                                       probs[j], rank=rank))

        if branches and getattr(model, "is_interflow", False):
            stage_names = list(model.stage_names)
            for b, stage in enumerate(stage_names):
                wrapper = _BranchLogits(model, b)
                if method in CAM_METHODS:
                    stage_module = model.get_submodule(stage)
                    b_heat, b_raw, _, _ = _run_cam(method, wrapper, stage_module, x_rep, list(explained))
                    b_layer = stage
                else:
                    b_heat, b_raw = _run_attribution(method, wrapper, x_rep, list(explained))
                    b_layer = None
                for j, (i, rank, _) in enumerate(pairs):
                    results.append(Explanation(name, method, b_layer, int(explained[j]), i, b_heat[j], b_raw[j],
                                               probs[j], rank=rank, branch=b))
    return results


def explain(models: Any, images: torch.Tensor | Mapping[str, torch.Tensor], target: Any = "predicted",
            method: str = "gradcam", layer: str | None = None, *, branches: bool = True) -> list[Explanation]:
    """Heat maps for every (model, image, target); see the module docstring.

    ``models``: one ``nn.Module``, a sequence of them (named by ``model.spec``) or a mapping name ->
    model. ``images``: a preprocessed batch ``[B, C, H, W]`` for every model, or a mapping model name
    -> its own batch (models with different input cards). ``target``: ``"predicted"``, a class index,
    a list of class indices (one per image) or ``("topk", k)``. ``layer``: qualified module name for
    CAMs (default ``model.default_cam_layer``). ``branches``: also explain each Interflow branch.
    Results are ordered by model, then (for each model) image and rank, then branch maps.
    """
    method = canonical_method(method)
    if isinstance(target, (torch.Tensor, np.ndarray)):
        target = target.tolist()
    results: list[Explanation] = []
    for name, model in _named_models(models):
        x = images[name] if isinstance(images, Mapping) else images
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise AttnvizError("images must be a preprocessed batch tensor [B, C, H, W]")
        expected = getattr(model, "in_chans", None)
        if expected and x.shape[1] != expected:
            raise AttnvizError(f"model {name} expects {expected} input channels, the images have {x.shape[1]}")
        results.extend(_explain_one_model(name, model, x, target, method, layer, branches))
    return results


# ---------------------------------------------------------------------------------------------
# Faithfulness


def _predict_probs(model: nn.Module, batches: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Softmax probability of ``targets[j]`` for each input ``batches[j]`` (no grad, in chunks)."""
    out = []
    with torch.no_grad():
        for start in range(0, batches.shape[0], chunk):
            logits = model(batches[start:start + chunk]).float()
            probs = torch.softmax(logits, dim=1)
            out.append(probs.gather(1, targets[start:start + chunk, None]).squeeze(1).cpu())
    return torch.cat(out)


def blurred(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of a batch (per channel; sigma defaults to 1/8 of the shorter side)."""
    side = min(x.shape[-2:])
    sigma = sigma or max(1.0, side / 8.0)
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, side - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "blur":
        return blurred(x)
    if kind == "mean":
        return torch.zeros_like(x)  # zero in normalised space = the dataset's mean colour
    raise AttnvizError(f"unknown baseline '{kind}'; use 'blur' or 'mean'")


def _auc_curve(model: nn.Module, x: torch.Tensor, heatmaps: np.ndarray, targets: Sequence[int], steps: int,
               start: torch.Tensor, end: torch.Tensor) -> np.ndarray:
    """Probability of the target as pixels move from ``start`` to ``end`` in order of saliency.

    At step s the top s/steps fraction of pixels (by the map, ties in raster order) come from ``end``.
    Returns curves [B, steps + 1].
    """
    batch, _, height, width = x.shape
    pixels = height * width
    maps = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32)).reshape(batch, 1, -1, 1)
    maps = F.interpolate(maps.reshape(batch, 1, *np.asarray(heatmaps).shape[-2:]), size=(height, width),
                         mode="bilinear", align_corners=False).reshape(batch, -1) if maps.shape[2] != pixels else maps.reshape(batch, -1)
    order = torch.argsort(-maps, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels).expand(batch, -1).contiguous())
    counts = torch.round(torch.linspace(0, pixels, steps + 1)).long()
    # masks[b, s, p] = pixel p is among the first counts[s] pixels of image b
    masks = (rank[:, None, :] < counts[None, :, None]).to(x.dtype).reshape(batch, steps + 1, 1, height, width)
    masks = masks.to(x.device)
    mixed = start[:, None] * (1 - masks) + end[:, None] * masks  # [B, S+1, C, H, W]
    flat = mixed.reshape(batch * (steps + 1), *x.shape[1:])
    target_rep = torch.as_tensor(list(targets), device=x.device).repeat_interleave(steps + 1)
    return _predict_probs(model, flat, target_rep).reshape(batch, steps + 1).numpy()


def _trapezoid(curves: np.ndarray) -> np.ndarray:
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(axis=1) / (2 * steps)


@dataclass
class Faithfulness:
    """Deletion / insertion AUC (lower / higher is more faithful) with their curves, per image."""

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    road: dict[str, np.ndarray] = field(default_factory=dict)


def deletion_insertion(model: nn.Module, x: torch.Tensor, heatmaps: Any, targets: Sequence[int], steps: int = 32,
                       deletion_baseline: str = "mean", insertion_baseline: str = "blur") -> Faithfulness:
    """Deletion and insertion metrics (Petsiuk, Das & Saenko, RISE, BMVC 2018) for any maps.

    Deletion: remove the most salient pixels first (replace them with ``deletion_baseline``: "mean" =
    zeros in normalised space, i.e. the dataset's mean colour; or "blur") in ``steps`` equal steps and
    integrate the target's softmax probability over the removed fraction (trapezoid rule; lower =
    the map found what the model needs). Insertion: start from ``insertion_baseline`` (a blurred copy
    by default, as in RISE) and insert the most salient pixels first (higher = better).
    ``heatmaps`` [B, h, w] at any resolution (bilinearly resized; only the pixel order matters), e.g.
    ``Explanation.heatmap``s or ``module_masks`` outputs.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape[0] != x.shape[0] or len(targets) != x.shape[0]:
        raise AttnvizError("give one map and one target per image")
    with borrowed(model):
        x = x.to(_device(model)).detach()
        deletion = _auc_curve(model, x, maps, targets, steps, x, _baseline(x, deletion_baseline))
        insertion = _auc_curve(model, x, maps, targets, steps, _baseline(x, insertion_baseline), x)
    return Faithfulness(_trapezoid(deletion), _trapezoid(insertion), deletion, insertion)


def road(model: nn.Module, x: torch.Tensor, heatmaps: Any, targets: Sequence[int],
         percentiles: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90)) -> dict[str, np.ndarray]:
    """ROAD (Rong et al., ICML 2022) from ``pytorch_grad_cam.metrics.road``, per image.

    ``morf``: mean change of the target's softmax probability when the most relevant pixels are
    removed by noisy linear imputation (more negative = more faithful); ``lerf``: same removing the
    least relevant first (closer to 0 = more faithful); ``combined`` = (lerf - morf) / 2 (higher =
    more faithful). Maps are resized to the input and min-max scaled per image first.
    """
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    height, width = x.shape[-2:]
    if maps.shape[-2:] != (height, width):
        maps = F.interpolate(torch.from_numpy(maps)[:, None], size=(height, width), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
    low = maps.reshape(len(maps), -1).min(axis=1).reshape(-1, 1, 1)
    high = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    maps = ((maps - low) / np.maximum(high - low, 1e-7)).astype(np.float32)
    score_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    with borrowed(model):
        x = x.to(_device(model)).detach()
        morf = ROADMostRelevantFirstAverage(list(percentiles))(x, maps, score_targets, model)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, maps, score_targets, model)
    morf, lerf = np.asarray(morf, dtype=np.float32), np.asarray(lerf, dtype=np.float32)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}


def module_masks(model: nn.Module, x: torch.Tensor, normalise: bool = False) -> dict[str, np.ndarray]:
    """The attention modules' own spatial masks, upsampled (bilinear) to the input size: site -> [B, H, W].

    LGAM M_spat, CBAM M_s, BAM's gate averaged over channels, SGE's per-group gates averaged over
    groups (see ``attnviz.probes``). Values are the modules' own (sigmoid outputs, in [0, 1]); with
    ``normalise`` each map is min-max scaled per image. Pass them to ``deletion_insertion`` / ``road``
    to ask whether a module's mask or a CAM is the more faithful explanation.
    """
    result = probe(model, x)
    height, width = x.shape[-2:]
    masks = {}
    for site, spatial in result.spatial_maps().items():
        mask = spatial.float().mean(dim=1, keepdim=True)
        mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        array = mask.numpy()
        if normalise:
            low = array.reshape(len(array), -1).min(axis=1).reshape(-1, 1, 1)
            high = array.reshape(len(array), -1).max(axis=1).reshape(-1, 1, 1)
            array = (array - low) / np.maximum(high - low, 1e-7)
        masks[site] = array.astype(np.float32)
    return masks


# ---------------------------------------------------------------------------------------------
# Class-wise excitation profiles


@dataclass
class ExcitationProfiles:
    """Per site: class-wise mean / std of channel weights [K, C], counts [K], specialisation score.

    Specialisation (our definition; the SE paper shows the profiles, not a number): the mean
    Euclidean distance between pairs of class-mean profiles, divided by the mean within-class spread
    sqrt(sum_c var_{k,c}) (the typical distance of one image's profile from its class mean). About 0:
    every class is excited alike; >= 1: classes differ more than images within a class do.
    Classes with fewer than 2 images are left out of the score.
    """

    sites: list[str]
    kinds: dict[str, str]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    counts: np.ndarray
    specialisation: dict[str, float]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"counts": self.counts,
                                         "sites": np.asarray(self.sites), "kinds": np.asarray([self.kinds[s] for s in self.sites])}
        for i, site in enumerate(self.sites):
            arrays[f"mean_{i}"] = self.mean[site]
            arrays[f"std_{i}"] = self.std[site]
            arrays[f"spec_{i}"] = np.asarray(self.specialisation[site])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ExcitationProfiles:
        sites = [str(s) for s in arrays["sites"]]
        kinds = dict(zip(sites, [str(k) for k in arrays["kinds"]], strict=True))
        return cls(sites, kinds, {s: np.asarray(arrays[f"mean_{i}"]) for i, s in enumerate(sites)},
                   {s: np.asarray(arrays[f"std_{i}"]) for i, s in enumerate(sites)}, np.asarray(arrays["counts"]),
                   {s: float(arrays[f"spec_{i}"]) for i, s in enumerate(sites)})


def specialisation_score(mean: np.ndarray, var: np.ndarray, counts: np.ndarray) -> float:
    """See ``ExcitationProfiles``: mean pairwise distance of class means / mean within-class spread."""
    valid = counts >= 2
    if valid.sum() < 2:
        return 0.0
    means, variances = mean[valid], var[valid]
    pairs = list(itertools.combinations(range(len(means)), 2))
    between = float(np.mean([np.linalg.norm(means[a] - means[b]) for a, b in pairs]))
    within = float(np.mean(np.sqrt(np.maximum(variances, 0.0).sum(axis=1))))
    return between / within if within > 0 else float("inf") if between > 0 else 0.0


def model_fingerprint(model: nn.Module) -> str:
    """sha1 over the spec and every parameter and buffer (identifies the weights a cache was made with)."""
    digest = hashlib.sha1(str(getattr(model, "spec", type(model).__name__)).encode())
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def excitation_profiles(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int | None = None,
                        cache_path: str | Path | None = None, cache_key: str | None = None) -> ExcitationProfiles:
    """Class-wise excitation profiles (Hu et al., SE paper, sec. 7.2 / fig. 6) over a dataset.

    ``batches`` yields ``(images [B, C, H, W], labels [B])`` (preprocessed). For every site with
    channel weights (SE, SE-FeLU, ECA, CBAM's channel gate, LGAM's group weights) this accumulates, per
    class, the mean and standard deviation of each channel's weight (float64 sums, batch by batch),
    and the specialisation score. ``cache_path`` (``.npz``): if it holds a result made with the same
    ``cache_key`` (default: ``model_fingerprint(model)``; add the dataset's identity to the path), it is
    returned without touching the data; otherwise the result is computed and written there.
    """
    key = cache_key or model_fingerprint(model)
    if cache_path is not None:
        cache_path = Path(cache_path)
        if cache_path.is_file():
            try:
                with np.load(cache_path, allow_pickle=False) as stored:
                    arrays = {k: stored[k] for k in stored.files}
                if json.loads(str(arrays.pop("meta")))["key"] == key:
                    return ExcitationProfiles.from_arrays(arrays)
            except (OSError, ValueError, KeyError):
                pass  # unreadable or stale cache: recompute
    num_classes = num_classes or int(getattr(model, "num_classes", 0) or 0)
    if not num_classes:
        raise AttnvizError("excitation profiles need the number of classes")
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    counts = np.zeros(num_classes, dtype=np.int64)
    device = _device(model)
    for images, labels in batches:
        result = probe(model, images.to(device))
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= num_classes):
            raise AttnvizError(f"a label lies outside 0..{num_classes - 1}")
        one_hot = np.eye(num_classes, dtype=np.float64)[labels_np]  # [B, K]
        counts += one_hot.sum(axis=0).astype(np.int64)
        for site, weights in result.channel_weights().items():
            w = weights.double().numpy()
            if site not in sums:
                sums[site] = np.zeros((num_classes, w.shape[1]))
                squares[site] = np.zeros((num_classes, w.shape[1]))
                kinds[site] = result[site].kind
            sums[site] += one_hot.T @ w
            squares[site] += one_hot.T @ (w * w)
    if counts.sum() == 0:
        raise AttnvizError("the dataset gave no images")
    sites = list(sums)
    safe = np.maximum(counts, 1)[:, None].astype(np.float64)
    means, stds, specs = {}, {}, {}
    for site in sites:
        mean = sums[site] / safe
        var = np.maximum(squares[site] / safe - mean**2, 0.0)
        means[site] = mean.astype(np.float32)
        stds[site] = np.sqrt(var).astype(np.float32)
        specs[site] = specialisation_score(mean, var, counts)
    profiles = ExcitationProfiles(sites, kinds, means, stds, counts, specs)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(cache_path.name + ".tmp.npz")
        np.savez(tmp, meta=np.asarray(json.dumps({"key": key})), **profiles.to_arrays())
        tmp.replace(cache_path)
    return profiles
