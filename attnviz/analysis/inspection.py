"""From an uploaded picture to everything the Inspect page and ``attnviz inspect`` show, in one call.

- :func:`read_picture` decodes untrusted bytes once (``attnviz.images.read_image``: size, pixel and
  format checks) into a :class:`Picture`: ``source`` (at most ``SOURCE_MAX_SIDE`` px, what the models
  see), ``display`` (``DISPLAY_SIDE`` px on its long side: what heat maps are drawn on) and
  ``thumbnail`` (``display`` in a square). A bad file gets ``error`` (one sentence) and never raises.
- :func:`inspect_picture` runs one model on one picture: the probe (probabilities and one summary per
  attention site), the heat maps of ``method`` (``attnviz.analysis.explanations.explain``), optionally their
  deletion/insertion scores and the attention modules' own spatial masks with theirs
  (``attnviz.analysis.faithfulness``). The result is an :class:`Inspection` of plain arrays: the app caches it per
  (model, picture, settings), the CLI prints it.
- :func:`heat_map_png` draws a map over a picture (``attnviz.overlay``).
- :func:`compare` is the whole way from uploaded bytes to drawn heat maps for a set of models: decode
  every picture, inspect it with every model, draw each map over it. It returns a :class:`Comparison`
  (pictures, one :class:`HeatMapCell` per model and usable picture, one sentence per model that failed),
  which the Inspect page only lays out. How a model inspects a picture is the caller's ``inspect``
  function, so the app passes its cached :func:`inspect_picture` and the library owns the flow.

:func:`inspect_picture` takes one picture per call: a page that adds a picture computes that picture
alone, and the CLI's per-site summaries describe exactly one image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from torch import nn

from attnviz.analysis.explanations import Explanation, explain
from attnviz.analysis.faithfulness import deletion_insertion, module_masks
from attnviz.analysis.probes import probe
from attnviz.device import model_device
from attnviz.errors import AttnvizError, ImageError
from attnviz.images import letterbox, preprocess, read_image
from attnviz.overlay import DEFAULT_COLORMAP, overlay_png

DISPLAY_SIDE = 224  # pictures are shown at this size (CIFAR's 32 px enlarged, photos reduced)
SOURCE_MAX_SIDE = 512  # the copy kept as the models' input; the full upload is not kept in memory


@dataclass
class Picture:
    """A decoded picture (or, with ``error`` set, one that could not be used and why)."""

    name: str
    digest: str
    error: str | None = None
    source: Image.Image | None = None
    display: Image.Image | None = None
    thumbnail: Image.Image | None = None
    notes: list[str] = field(default_factory=list)


def read_picture(name: str, data: bytes) -> Picture:
    """Decode ``data`` (an untrusted upload) into a :class:`Picture`; never raises for a bad file."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        loaded = read_image(data)
    except ImageError as err:
        return Picture(name, digest, error=str(err))
    image = loaded.image
    source = image.copy()
    if max(source.size) > SOURCE_MAX_SIDE:
        source.thumbnail((SOURCE_MAX_SIDE, SOURCE_MAX_SIDE), Image.Resampling.LANCZOS)
    scale = DISPLAY_SIDE / max(image.size)
    display_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    display = source.resize(display_size, resample)
    # a square picture's letterbox is its display copy pixel for pixel: share it (cached pictures are
    # read-only), half the memory of every cached CIFAR picture
    square = display.size == (DISPLAY_SIDE, DISPLAY_SIDE) and display.mode == "RGB"
    thumbnail = display if square else letterbox(display, DISPLAY_SIDE)
    return Picture(name, digest, source=source, display=display, thumbnail=thumbnail, notes=list(loaded.notes))


@dataclass
class MapScore:
    """Deletion / insertion AUC of one heat map for its target (Petsiuk et al. 2018) and their curves."""

    deletion: float
    insertion: float
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray


@dataclass
class MaskReading:
    """An attention module's own spatial mask at input resolution [H, W] and its scores for the
    predicted class."""

    site: str
    mask: np.ndarray
    deletion: float
    insertion: float


@dataclass
class Inspection:
    """What one model makes of one picture.

    ``probs`` [K]; ``sites``: one summary per attention site (``SiteProbe.summary``); ``maps``: the
    explanations of ``method`` (the model's own first, then its Interflow branches when asked for);
    ``scores``: one :class:`MapScore` per non-branch map, same order (None when not asked for);
    ``masks``: site -> :class:`MaskReading` for the modules that have a spatial mask (None when not
    asked for; empty for channel-only models).
    """

    probs: np.ndarray
    sites: list[dict[str, Any]]
    maps: list[Explanation]
    scores: list[MapScore] | None = None
    masks: dict[str, MaskReading] | None = None

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))

    def top(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` most probable classes as (class, probability), most probable first."""
        # numpy, not torch: a page calls this while drawing; a torch kernel there would start an OpenMP
        # team on the script thread, which slows every other thread's kernels (benchmarks/compute_thread.py)
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(int(i), float(self.probs[i])) for i in order]

    @property
    def own_maps(self) -> list[Explanation]:
        return [e for e in self.maps if e.branch is None]

    @property
    def branch_maps(self) -> list[Explanation]:
        return sorted((e for e in self.maps if e.branch is not None), key=lambda e: e.branch)


def inspect_picture(model: nn.Module, card: dict, image: Image.Image, *, method: str = "gradcam",
                    target: Any = "predicted", layer: str | None = None, scores: bool = False,
                    masks: bool = False, branches: bool = False, name: str = "model") -> Inspection:
    """Run ``model`` (with its ``card``'s preprocessing) on one PIL ``image``; see the module docstring.

    ``target``, ``method`` and ``layer`` are :func:`attnviz.analysis.explanations.explain`'s; ``branches`` adds
    one map per Interflow branch. Raises ``AttnvizError`` (one sentence) for a bad target, layer or method.
    """
    x = preprocess(image, card).to(model_device(model))
    result = probe(model, x)
    probs = result.probs[0].numpy()
    maps = explain({name: model}, x, target=target, method=method, layer=layer, branches=branches)
    inspection = Inspection(probs=probs, sites=result.summary(), maps=maps)
    if scores:
        own = [e for e in maps if e.branch is None]
        measured = deletion_insertion(model, x.repeat(len(own), 1, 1, 1), np.stack([e.heatmap for e in own]),
                                      [e.target for e in own])
        inspection.scores = [MapScore(float(d), float(i), dc, ic) for d, i, dc, ic in zip(
            measured.deletion_auc, measured.insertion_auc, measured.deletion_curve, measured.insertion_curve,
            strict=True)]
    if masks:
        inspection.masks = {}
        for site, array in module_masks(model, x).items():
            measured = deletion_insertion(model, x, array, [inspection.predicted])
            inspection.masks[site] = MaskReading(site, array[0], float(measured.deletion_auc[0]),
                                                 float(measured.insertion_auc[0]))
    return inspection


def heat_map_png(image: Image.Image, heatmap: np.ndarray, *, colormap: str = DEFAULT_COLORMAP, opacity: float = 0.5,
                 vmin: float = 0.0, vmax: float = 1.0, canvas: int | None = DISPLAY_SIDE) -> bytes:
    """PNG of ``heatmap`` over ``image`` (any aspect ratio; in a ``canvas`` px square unless None)."""
    return overlay_png(image, heatmap, colormap=colormap, opacity=opacity, vmin=vmin, vmax=vmax, canvas=canvas)


@dataclass
class HeatMapCell:
    """One model's view of one picture, drawn: its :class:`Inspection`, one PNG per map of its own (the order
    of ``inspection.own_maps``) and, when masks were asked for and the model has any, the chosen site's
    module mask and its PNG."""

    inspection: Inspection
    map_pngs: list[bytes]
    mask: MaskReading | None = None
    mask_png: bytes | None = None


@dataclass
class Comparison:
    """What :func:`compare` found: ``pictures`` as given (an unusable one carries its ``error``),
    ``cells[model id]``: one :class:`HeatMapCell` per usable picture (the order of :attr:`usable`), and
    ``errors[model id]``: one sentence for a model that could not inspect them (no cells then)."""

    pictures: list[Picture]
    cells: dict[str, list[HeatMapCell]]
    errors: dict[str, str]

    @property
    def usable(self) -> list[Picture]:
        return [picture for picture in self.pictures if picture.error is None]

    def inspections(self) -> dict[str, list[Inspection]]:
        """model id -> its inspections of the usable pictures."""
        return {model: [cell.inspection for cell in cells] for model, cells in self.cells.items()}


def compare(model_ids: Sequence[str], sources: Sequence[tuple[str, bytes]],
            inspect: Callable[[str, Picture], Inspection], *, read: Callable[[str, bytes], Picture] = read_picture,
            colormap: str = DEFAULT_COLORMAP, opacity: float = 0.5,
            mask_site: Literal["deepest", "shallowest"] = "deepest", executor: Executor | None = None) -> Comparison:
    """Every model's heat maps over every picture: ``sources`` are (name, untrusted bytes), decoded with
    ``read`` (a bad file gets its one-sentence ``error`` and is skipped); ``inspect(model id, picture)``
    runs one model on one picture (:func:`inspect_picture` with the caller's method, target, layer and
    scores); each map is drawn over the picture's ``display`` copy with ``colormap`` and ``opacity``
    (maps in [0, 1]; module masks on their own [0, 1] values). A model whose ``inspect`` raises an
    ``AttnvizError`` gets that sentence in ``errors`` and no cells; the other models go on.

    With an ``executor``, the models are inspected side by side on its threads (each model's pictures in
    order, on one thread): a server with idle cores answers one user sooner, and the result is the same.
    ``inspect`` must then be safe to call from several threads at once (``attnviz.locks`` makes each
    model's own calls take turns)."""
    if mask_site not in ("deepest", "shallowest"):
        raise AttnvizError(f"mask_site must be 'deepest' or 'shallowest', not {mask_site!r}")
    pictures = [read(name, data) for name, data in sources]
    usable = [picture for picture in pictures if picture.error is None]

    def inspect_all(model_id: str) -> list[Inspection]:
        return [inspect(model_id, picture) for picture in usable]

    if executor is None or len(model_ids) < 2:
        outcomes = [_outcome(inspect_all, model_id) for model_id in model_ids]
    else:
        outcomes = list(executor.map(lambda model_id: _outcome(inspect_all, model_id), model_ids))
    cells: dict[str, list[HeatMapCell]] = {}
    errors: dict[str, str] = {}
    for model_id, outcome in zip(model_ids, outcomes, strict=True):
        if isinstance(outcome, AttnvizError):
            errors[model_id] = str(outcome)
            continue
        cells[model_id] = [_draw(picture, inspection, colormap, opacity, mask_site)
                           for picture, inspection in zip(usable, outcome, strict=True)]
    return Comparison(pictures, cells, errors)


def _outcome(inspect_all: Callable[[str], list[Inspection]], model_id: str) -> list[Inspection] | AttnvizError:
    """One model's inspections, or the one-sentence error that stopped them (any other exception is a bug
    and propagates)."""
    try:
        return inspect_all(model_id)
    except AttnvizError as err:
        return err


def _draw(picture: Picture, inspection: Inspection, colormap: str, opacity: float, mask_site: str) -> HeatMapCell:
    cell = HeatMapCell(inspection, [heat_map_png(picture.display, e.heatmap, colormap=colormap, opacity=opacity)
                                    for e in inspection.own_maps])
    if inspection.masks:
        sites = list(inspection.masks)
        cell.mask = inspection.masks[sites[-1] if mask_site == "deepest" else sites[0]]
        cell.mask_png = heat_map_png(picture.display, cell.mask.mask, colormap=colormap, opacity=opacity)
    return cell
