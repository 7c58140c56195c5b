"""Class-wise excitation profiles (Hu et al., SE paper, sec. 7.2 / fig. 6): per attention site, the
mean and spread of every channel's weight for each class, a specialisation score, and a cache keyed by
the model's weights (:func:`model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnviz.analysis.probes import probe
from attnviz.device import model_device
from attnviz.errors import AttnvizError


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
        cached = _read_cache(cache_path, key)
        if cached is not None:
            return cached
    num_classes = num_classes or int(getattr(model, "num_classes", 0) or 0)
    if not num_classes:
        raise AttnvizError("excitation profiles need the number of classes")
    sums = _class_sums(model, batches, num_classes)
    if sums.counts.sum() == 0:
        raise AttnvizError("the dataset gave no images")
    profiles = sums.profiles()
    if cache_path is not None:
        _write_cache(cache_path, key, profiles)
    return profiles


def _read_cache(cache_path: Path, key: str) -> ExcitationProfiles | None:
    """The profiles stored at ``cache_path`` if they were made with ``key``, else None."""
    if not cache_path.is_file():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if json.loads(str(arrays.pop("meta")))["key"] == key:
            return ExcitationProfiles.from_arrays(arrays)
    except (OSError, ValueError, KeyError):
        pass  # unreadable or stale cache: recompute
    return None


def _write_cache(cache_path: Path, key: str, profiles: ExcitationProfiles) -> None:
    """Atomic write (temporary file, then rename), so a reader never sees half a cache."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(cache_path.name + ".tmp.npz")
    np.savez(tmp, meta=np.asarray(json.dumps({"key": key})), **profiles.to_arrays())
    tmp.replace(cache_path)


@dataclass
class _ClassSums:
    """Per site, per class: the sum and the sum of squares of every channel's weight [K, C]; images per class [K]."""

    sums: dict[str, np.ndarray]
    squares: dict[str, np.ndarray]
    kinds: dict[str, str]
    counts: np.ndarray

    def profiles(self) -> ExcitationProfiles:
        sites = list(self.sums)
        safe = np.maximum(self.counts, 1)[:, None].astype(np.float64)
        means, stds, specs = {}, {}, {}
        for site in sites:
            mean = self.sums[site] / safe
            var = np.maximum(self.squares[site] / safe - mean**2, 0.0)
            means[site] = mean.astype(np.float32)
            stds[site] = np.sqrt(var).astype(np.float32)
            specs[site] = specialisation_score(mean, var, self.counts)
        return ExcitationProfiles(sites, self.kinds, means, stds, self.counts, specs)


def _class_sums(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> _ClassSums:
    """Probe every batch and add each image's channel weights to its class's sums (float64)."""
    totals = _ClassSums({}, {}, {}, np.zeros(num_classes, dtype=np.int64))
    device = model_device(model)
    for images, labels in batches:
        result = probe(model, images.to(device))
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= num_classes):
            raise AttnvizError(f"a label lies outside 0..{num_classes - 1}")
        one_hot = np.eye(num_classes, dtype=np.float64)[labels_np]  # [B, K]
        totals.counts += one_hot.sum(axis=0).astype(np.int64)
        for site, weights in result.channel_weights().items():
            w = weights.double().numpy()
            if site not in totals.sums:
                totals.sums[site] = np.zeros((num_classes, w.shape[1]))
                totals.squares[site] = np.zeros((num_classes, w.shape[1]))
                totals.kinds[site] = result[site].kind
            totals.sums[site] += one_hot.T @ w
            totals.squares[site] += one_hot.T @ (w * w)
    return totals
