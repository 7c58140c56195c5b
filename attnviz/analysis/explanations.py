"""Explanations behind one call: CAMs (pytorch-grad-cam) and attributions (captum).

(How faithful a map is: :mod:`attnviz.analysis.faithfulness`; class-wise excitation profiles:
:mod:`attnviz.analysis.profiles`.)

``explain(models, images, target, method, layer)`` returns one ``Explanation`` per (model, image,
target[, Interflow branch]): a heat map in [0, 1] at input resolution, the raw map, the class
explained, the layer, the method and the model's probabilities.

Methods (the libraries do the work; nothing here re-implements them):
- CAMs from pytorch-grad-cam: ``gradcam`` (Selvaraju et al. 2017), ``gradcam++`` (Chattopadhay et
  al. 2018), ``xgradcam`` (Fu et al. 2020), ``hirescam`` (Draelos & Carin 2020), ``layercam`` (Jiang
  et al. 2021), ``eigencam`` (Muhammad & Yeasin 2020; class-agnostic), ``scorecam`` (Wang et al.
  2020). ``raw`` is the library's map at the layer's resolution before its ReLU and min-max scaling
  (kept by subclassing the library's class: ``get_cam_image`` extended, never patched; Score-CAM's
  weight step is our own batched loop so it draws no progress bar); ``heatmap`` is the library's output.
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

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.device import model_device
from attnviz.errors import AttnvizError
from attnviz.locks import borrowed

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


def load_backends() -> None:
    """Import the explanation libraries now rather than at the first explanation: pytorch-grad-cam and
    captum bring scipy, scikit-learn, matplotlib and OpenCV, about 2,400 modules. A server calls this
    before `attnviz.device.settle_heap`, so that they are frozen with the models instead of being walked
    by every later garbage collection."""
    import pytorch_grad_cam  # noqa: F401
    from captum import attr  # noqa: F401


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


class _RecordsRawMaps:
    """Mixin for a pytorch-grad-cam class: keeps each raw map ``get_cam_image`` returns (the map at the
    layer's resolution before the library's ReLU and scaling) in ``raw_maps``."""

    def get_cam_image(self, *args, **kwargs):
        raw = super().get_cam_image(*args, **kwargs)
        self.raw_maps.append(np.asarray(raw, dtype=np.float32))
        return raw


def _quiet_score_cam_weights(cam, input_tensor, targets, activations) -> np.ndarray:
    """Score-CAM's channel weights (Wang et al. 2020, eq. (3)-(5)): each channel's activation map,
    upsampled to the input (bilinear, corners aligned) and min-max scaled, masks the input; the weights
    are the softmax over channels of the target's score for each masked input. Computed here, in
    batches of ``cam.batch_size`` (16 by default, as the library), so no progress bar is drawn."""
    with torch.no_grad():
        maps = F.interpolate(torch.from_numpy(activations).to(cam.device), size=input_tensor.shape[-2:],
                             mode="bilinear", align_corners=True)
        flat = maps.view(maps.size(0), maps.size(1), -1)
        low, high = flat.min(dim=-1)[0][:, :, None, None], flat.max(dim=-1)[0][:, :, None, None]
        masks = (maps - low) / (high - low + 1e-8)
        chunk = getattr(cam, "batch_size", 16)
        scores = []
        for target, image, image_masks in zip(targets, input_tensor, masks, strict=True):
            masked = image[None] * image_masks[:, None]  # [channels, C, H, W]
            for start in range(0, masked.size(0), chunk):
                scores += [target(output).cpu().item() for output in cam.model(masked[start:start + chunk])]
        scores = torch.tensor(scores).view(activations.shape[0], activations.shape[1])
        return torch.softmax(scores, dim=-1).numpy()


@functools.cache
def _cam_class(method: str) -> type:
    """The library's class for ``method``, extended by subclassing (raw maps kept; Score-CAM quiet)."""
    import pytorch_grad_cam as pgc

    base = {
        "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
        "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM,
    }[method]
    body: dict[str, Any] = {"__doc__": f"{base.__name__} that keeps its raw maps."}
    if method == "scorecam":
        # the library's ScoreCAM draws a tqdm bar per image on stderr; the CLI and the app report
        # progress themselves
        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            return _quiet_score_cam_weights(self, input_tensor, targets, activations)

        body["get_cam_weights"] = get_cam_weights
    return type(f"Recording{base.__name__}", (_RecordsRawMaps, base), body)


def _run_cam(method: str, model: nn.Module, layer_module: nn.Module, x: torch.Tensor,
             classes: list[int | None]) -> tuple[np.ndarray, np.ndarray, torch.Tensor, list[int]]:
    """(heatmaps [N, H, W], raw [N, h, w], outputs [N, K], explained classes) for one library call."""
    cam_class = _cam_class(method)

    def start_graph_at_layer(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # The layer's output becomes a leaf that requires grad, so the backward pass runs only from
        # the score down to this layer (what CAMs need) instead of through the whole network to the
        # input; the gradient w.r.t. this output is unchanged. Registered before the library's own
        # hooks, which therefore see (and hook their gradient on) this leaf.
        return output.detach().requires_grad_(True)

    handle = layer_module.register_forward_hook(start_graph_at_layer)
    try:
        with cam_class(model=model, target_layers=[layer_module]) as cam:
            cam.raw_maps = []
            heatmaps = cam(input_tensor=x.detach(), targets=[_ClassScore(c) for c in classes])
            outputs = cam.outputs.detach().float().cpu()
            raw = cam.raw_maps[0]
    finally:
        handle.remove()
    explained = [int(outputs[i].argmax()) if c is None else c for i, c in enumerate(classes)]
    return np.asarray(heatmaps, dtype=np.float32), raw, outputs, explained


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
    device = model_device(model)
    batch = x.shape[0]
    results: list[Explanation] = []
    with borrowed(model, for_gradients=True):
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
