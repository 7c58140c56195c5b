"""`attnviz.analysis.inspection.compare`: uploaded bytes to drawn heat maps for a set of models, in one call."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.analysis.inspection import DISPLAY_SIDE, compare, inspect_picture, read_picture
from attnviz.errors import AttnvizError
from attnviz.models.registry import create_model

CARD = {"input_size": [32, 32], "in_chans": 3, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
        "num_classes": 10}


def _png(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    built = {spec: create_model(spec, num_classes=10).eval().requires_grad_(False)
             for spec in ("resnet20-se", "resnet20-cbam")}
    return built


def _inspector(models, calls: list, **options):
    def inspect(model_id, picture):
        calls.append((model_id, picture.name))
        if model_id == "broken":
            raise AttnvizError("The model 'broken' cannot be loaded.")
        return inspect_picture(models[model_id], CARD, picture.source, name=model_id, **options)

    return inspect


def test_every_usable_picture_is_inspected_by_every_model_and_drawn_over_the_picture(models):
    sources = [("wide.png", _png(40, 80, 1)), ("notes.png", b"this is not a picture"), ("small.png", _png(32, 32, 2))]
    calls = []
    comparison = compare(["resnet20-se", "broken", "resnet20-cbam"], sources,
                         _inspector(models, calls, scores=True), colormap="viridis", opacity=0.7)

    assert [p.name for p in comparison.pictures] == ["wide.png", "notes.png", "small.png"]
    assert comparison.pictures[1].error and "\n" not in comparison.pictures[1].error
    assert [p.name for p in comparison.usable] == ["wide.png", "small.png"]
    # the bad file reaches no model; the broken model's sentence is kept and the others go on
    assert ("resnet20-se", "notes.png") not in calls
    assert comparison.errors == {"broken": "The model 'broken' cannot be loaded."}
    assert list(comparison.cells) == ["resnet20-se", "resnet20-cbam"]
    for model_id, cells in comparison.cells.items():
        assert len(cells) == 2
        for picture, cell in zip(comparison.usable, cells, strict=True):
            direct = inspect_picture(models[model_id], CARD, picture.source, name=model_id)
            np.testing.assert_allclose(cell.inspection.probs, direct.probs, rtol=1e-5, atol=1e-6)
            assert len(cell.map_pngs) == len(cell.inspection.own_maps) == 1
            drawn = Image.open(io.BytesIO(cell.map_pngs[0]))
            assert drawn.format == "PNG" and drawn.size == (DISPLAY_SIDE, DISPLAY_SIDE)
            assert cell.mask is None and cell.mask_png is None  # masks were not asked for
    assert comparison.inspections()["resnet20-cbam"][1] is comparison.cells["resnet20-cbam"][1].inspection


def test_models_inspected_side_by_side_on_an_executor_give_the_same_comparison(models):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    sources = [("a.png", _png(32, 32, 7)), ("b.png", _png(40, 30, 8))]
    threads = set()

    def inspect(model_id, picture):
        threads.add(threading.current_thread().name)
        return _inspector(models, [])(model_id, picture)

    alone = compare(["resnet20-se", "broken", "resnet20-cbam"], sources, inspect)
    with ThreadPoolExecutor(3, thread_name_prefix="side-by-side") as pool:
        threads.clear()
        together = compare(["resnet20-se", "broken", "resnet20-cbam"], sources, inspect, executor=pool)
    assert threads and all(name.startswith("side-by-side") for name in threads)
    assert together.errors == alone.errors and list(together.cells) == list(alone.cells)
    for model_id in alone.cells:
        for one, other in zip(alone.cells[model_id], together.cells[model_id], strict=True):
            np.testing.assert_array_equal(one.inspection.probs, other.inspection.probs)
            assert one.map_pngs == other.map_pngs

    def buggy(model_id, picture):
        raise RuntimeError("a bug, not a user's mistake")

    with ThreadPoolExecutor(2) as pool, pytest.raises(RuntimeError, match="a bug"):
        compare(["resnet20-se", "resnet20-cbam"], sources, buggy, executor=pool)


def test_the_display_settings_change_the_pictures_and_not_the_inspection(models):
    sources = [("one.png", _png(32, 32, 3))]
    cached = {}

    def inspect(model_id, picture):  # a cache, as the app's: the second call runs no model
        key = (model_id, picture.digest)
        if key not in cached:
            cached[key] = inspect_picture(models[model_id], CARD, picture.source, name=model_id)
        return cached[key]

    faint = compare(["resnet20-se"], sources, inspect, opacity=0.2)
    strong = compare(["resnet20-se"], sources, inspect, opacity=0.9)
    assert len(cached) == 1
    assert faint.cells["resnet20-se"][0].inspection is strong.cells["resnet20-se"][0].inspection
    assert faint.cells["resnet20-se"][0].map_pngs != strong.cells["resnet20-se"][0].map_pngs


def test_module_masks_come_from_the_chosen_site_and_channel_only_models_have_none(models):
    sources = [("one.png", _png(32, 32, 4))]
    cached = {}

    def inspect(model_id, picture):  # each model runs once (masks are scored per site: the costly part)
        if model_id not in cached:
            cached[model_id] = inspect_picture(models[model_id], CARD, picture.source, masks=True, name=model_id)
        return cached[model_id]

    deepest = compare(["resnet20-se", "resnet20-cbam"], sources, inspect)
    shallowest = compare(["resnet20-cbam"], sources, inspect, mask_site="shallowest")

    assert deepest.cells["resnet20-se"][0].mask is None  # SE is channel-only: nothing to draw
    sites = list(deepest.cells["resnet20-cbam"][0].inspection.masks)
    assert len(sites) > 1
    assert deepest.cells["resnet20-cbam"][0].mask.site == sites[-1]
    assert shallowest.cells["resnet20-cbam"][0].mask.site == sites[0]
    assert Image.open(io.BytesIO(shallowest.cells["resnet20-cbam"][0].mask_png)).format == "PNG"
    with pytest.raises(AttnvizError, match="mask_site"):
        compare(["resnet20-cbam"], sources, inspect, mask_site="middle")


def test_a_custom_reader_decodes_every_source_once():
    seen = []

    def read(name, data):
        seen.append(name)
        return read_picture(name, data)

    comparison = compare([], [("a.png", _png(8, 8, 5)), ("b.png", _png(8, 8, 6))], lambda *_: None, read=read)
    assert seen == ["a.png", "b.png"] and comparison.cells == {} and len(comparison.usable) == 2


@pytest.mark.parametrize("height, width", [(32, 32), (300, 300), (40, 64), (600, 90)])
def test_a_pictures_thumbnail_is_its_display_letterboxed_and_a_square_one_shares_its_display(height, width):
    from attnviz.images import letterbox

    picture = read_picture("p.png", _png(height, width, seed=height + width))
    assert picture.thumbnail.size == (DISPLAY_SIDE, DISPLAY_SIDE)
    assert np.array_equal(np.asarray(picture.thumbnail), np.asarray(letterbox(picture.display, DISPLAY_SIDE)))
    assert (picture.thumbnail is picture.display) == (height == width)
