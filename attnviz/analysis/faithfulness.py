"""Is a heat map faithful to the model? Deletion / insertion (Petsiuk et al. 2018), ROAD (Rong et al.
2022), and the attention modules' own spatial masks as maps to score beside the CAMs.

Every call borrows the model (``attnviz.locks.borrowed``: its lock, eval mode, restored after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.analysis import traced
from attnviz.analysis.probes import probe
from attnviz.device import model_device
from attnviz.errors import AttnvizError
from attnviz.locks import borrowed


def _predict_probs(model: nn.Module, batches: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Softmax probability of ``targets[j]`` for each input ``batches[j]`` (no grad, in chunks).

    Through the model's traced graph (``attnviz.analysis.traced``: the same numbers, without the interpreter
    lock between operators, so other threads' Python cannot stall the passes).
    """
    out = []
    with torch.no_grad():
        for start in range(0, batches.shape[0], chunk):
            logits = traced.forward(model, batches[start:start + chunk]).float()
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
        x = x.to(model_device(model)).detach()
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
        x = x.to(model_device(model)).detach()
        morf = ROADMostRelevantFirstAverage(list(percentiles))(x, maps, score_targets, model)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, maps, score_targets, model)
    morf, lerf = np.asarray(morf, dtype=np.float32), np.asarray(lerf, dtype=np.float32)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}


def module_masks(model: nn.Module, x: torch.Tensor, normalise: bool = False) -> dict[str, np.ndarray]:
    """The attention modules' own spatial masks, upsampled (bilinear) to the input size: site -> [B, H, W].

    LGAM M_spat, CBAM M_s, BAM's gate averaged over channels, SGE's per-group gates averaged over
    groups (see ``attnviz.analysis.probes``). Values are the modules' own (sigmoid outputs, in [0, 1]); with
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


