"""How alike two maps are (the sanity checks' measures; plain numpy / torch, easy to check by hand).

- :func:`spearman`: Spearman rank correlation of two maps (average ranks for ties), NaN when either is
  constant or not finite;
- :func:`ssim`: structural similarity (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01,
  K2 = 0.03, reflected borders), the mean over the map;
- :func:`rank_correlations` / :func:`map_similarity`: those per image of a batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnviz.errors import AttnvizError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5




def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 0-based, float64."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="mergesort")
    sorted_values = flat[order]
    ranks = np.empty(flat.size, dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], flat.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end - 1) / 2.0
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two maps of equal size (flattened); NaN if either is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise AttnvizError(f"maps of different sizes cannot be compared ({a.size} and {b.size} values)")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    if denominator == 0.0:
        return math.nan
    return float(np.clip((ra * rb).sum() / denominator, -1.0, 1.0))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(a: Any, b: Any, data_range: float = 1.0) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004; see the module docstring)."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.dim() != 2:
        raise AttnvizError("SSIM compares two 2-D maps of the same size")
    height, width = x.shape
    size = min(SSIM_WINDOW, 2 * ((min(height, width) - 1) // 2) + 1)
    if size < 3:
        return 1.0 if torch.equal(x, y) else math.nan
    kernel = _gaussian_window(size, SSIM_SIGMA)
    radius = size // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t[None, None], (radius, radius, radius, radius), mode="reflect")
        t = F.conv2d(t, kernel.view(1, 1, 1, -1))
        return F.conv2d(t, kernel.view(1, 1, -1, 1))[0, 0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def rank_correlations(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-row Spearman correlation of two batches [N, ...] (flattened per row)."""
    return np.asarray([spearman(r, o) for r, o in zip(reference, other, strict=True)], dtype=np.float64)


def map_similarity(reference_raw: np.ndarray, reference_heat: np.ndarray, raw: np.ndarray,
                   heat: np.ndarray) -> dict[str, np.ndarray]:
    """``spearman``, ``spearman_abs`` (raw maps) and ``ssim`` (heat maps), each per image [N]."""
    return {
        "spearman": rank_correlations(reference_raw, raw),
        "spearman_abs": rank_correlations(np.abs(reference_raw), np.abs(raw)),
        "ssim": np.asarray([ssim(r, h) for r, h in zip(reference_heat, heat, strict=True)], dtype=np.float64),
    }
