"""Pure functions behind the studies' numbers (no torch, no files): easy to check by hand.

- :func:`felu_metrics`: the FeLU paper's metrics A-D (He & Sun 2020, §3.1).
- :func:`compare_to_reference`: which differences of a seed-averaged metric exceed the seed-to-seed
  spread.
- :func:`pointing_hit`: the pointing game (Zhang et al., ECCV 2016) for one map and one box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def felu_metrics(train_acc: Sequence[Sequence[float]], val_acc: Sequence[Sequence[float]]) -> dict:
    """Metrics A-D of the FeLU paper, §3.1, from per-run, per-iteration accuracies.

    ``train_acc[r][t]`` and ``val_acc[r][t]``: run r (the paper uses 5), iteration t (the paper: 100).
    The paper defines (our translation):

    - A: "the mean over the 5 runs of the validation accuracy at the last iteration"
      -> ``mean_r val[r, T-1]``.
    - B: "the validation accuracy where the 5-run mean training accuracy is highest". We read it as:
      take the mean training-accuracy curve over runs, ``m(t) = mean_r train[r, t]``; find the
      iteration ``t* = argmax_t m(t)`` (the first one on ties); report the mean validation accuracy
      over runs at that iteration, ``mean_r val[r, t*]``. (A single number per table row needs an
      aggregate over runs; the mean is the one the sentence already uses for training accuracy.)
    - C: "the maximum over the 5 runs of the validation accuracy at the last iteration"
      -> ``max_r val[r, T-1]``.
    - D: "the maximum validation accuracy over all runs" (and all iterations) -> ``max_{r,t} val[r, t]``.

    By definition C <= D and A <= C. Also returned: ``t_star`` (0-based) and ``B_peak_of_mean``
    (``max_t mean_r val[r, t]``, the peak of the mean validation curve, an upper bound for B that we
    show as a second reading, since the paper's B exceeds its A in every row).
    """
    train = np.asarray(train_acc, dtype=np.float64)
    val = np.asarray(val_acc, dtype=np.float64)
    if train.ndim != 2 or train.shape != val.shape or train.size == 0:
        raise ValueError("train_acc and val_acc must be non-empty [runs][iterations] arrays of one shape")
    mean_train = train.mean(axis=0)
    t_star = int(np.argmax(mean_train))  # argmax returns the first maximum: ties go to the earliest
    mean_val = val.mean(axis=0)
    return {
        "A": float(val[:, -1].mean()),
        "B": float(val[:, t_star].mean()),
        "C": float(val[:, -1].max()),
        "D": float(val.max()),
        "t_star": t_star,
        "B_peak_of_mean": float(mean_val.max()),
        "runs": int(val.shape[0]),
        "iterations": int(val.shape[1]),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """Pooled sample standard deviation of two groups: sqrt(((n1-1)s1^2 + (n2-1)s2^2) / (n1+n2-2))."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dof = a_arr.size + b_arr.size - 2
    if dof <= 0:
        return math.nan
    ss = ((a_arr - a_arr.mean()) ** 2).sum() + ((b_arr - b_arr.mean()) ** 2).sum()
    return float(math.sqrt(ss / dof))


SPREAD_FACTOR = 2.0


def compare_to_reference(groups: dict[str, Sequence[float]], reference: str, factor: float = SPREAD_FACTOR) -> list[dict]:
    """For every group, its mean minus the reference's, against the seed-to-seed spread.

    A difference "exceeds the spread" when ``|mean_g - mean_ref| > factor x pooled_std(g, ref)``
    (factor 2 by default). This is a plain, conservative screen, not a significance test: with 3 seeds
    per group a real difference of one pooled standard deviation will usually not pass, and when
    every seed of both groups agrees exactly (pooled std 0) any non-zero difference passes.
    """
    if reference not in groups:
        raise ValueError(f"reference group '{reference}' is missing")
    ref = groups[reference]
    ref_mean = float(np.mean(ref))
    out = []
    for name, values in groups.items():
        if name == reference:
            continue
        mean = float(np.mean(values))
        spread = pooled_std(values, ref)
        delta = mean - ref_mean
        exceeds = bool(abs(delta) > factor * spread) if not math.isnan(spread) else False
        out.append({"group": name, "reference": reference, "delta": delta, "pooled_std": spread,
                    "ratio": (abs(delta) / spread) if spread and not math.isnan(spread) else None,
                    "exceeds": exceeds, "n": len(values), "n_reference": len(ref)})
    return out


def pointing_hit(heatmap: np.ndarray, box: tuple[int, int, int, int], tolerance: int = 0) -> bool:
    """Pointing game: is the map's maximum inside the object's box (grown by ``tolerance`` pixels)?

    ``box = (top, left, height, width)`` in the map's pixel grid. Ties between maxima: the first in
    raster order (``argmax``), so a constant map points at the top-left corner — a map that has no
    preference gets no credit for it.
    """
    array = np.asarray(heatmap)
    row, col = np.unravel_index(int(np.argmax(array)), array.shape)
    top, left, height, width = box
    return bool(top - tolerance <= row < top + height + tolerance and left - tolerance <= col < left + width + tolerance)
