"""explain(): every method, targets, layers, Interflow branches, shared-model hygiene, threads,
a trained model whose evidence location is known, faithfulness metrics, module masks, excitation
profiles and overlays."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attnviz.analysis.explanations import CAM_METHODS, METHODS, explain
from attnviz.analysis.faithfulness import blurred, deletion_insertion, module_masks, road
from attnviz.analysis.profiles import ExcitationProfiles, excitation_profiles, specialisation_score
from attnviz.errors import AttnvizError
from attnviz.models.registry import create_model
from attnviz.overlay import colorize, overlay, overlay_png, shared_range


def build(spec: str, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(spec, num_classes=num_classes).eval()


def images(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def se_model():
    return build("resnet20-se").requires_grad_(False)


SLOW_METHODS = {"scorecam", "occlusion"}  # one forward pass per channel / per window position


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_METHODS else m for m in METHODS])
def test_every_method_gives_maps_in_unit_range(se_model, method):
    x = images()
    results = explain(se_model, x, target=3, method=method)
    assert len(results) == 2
    for i, result in enumerate(results):
        assert result.method == method and result.image_index == i and result.target == 3
        assert result.heatmap.shape == (32, 32)
        assert np.isfinite(result.heatmap).all()
        assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0 + 1e-6
        assert result.heatmap.max() > 0.5  # normalised, not an empty map
        assert result.probs.shape == (10,) and result.probs.sum() == pytest.approx(1.0, abs=1e-5)
        if method in CAM_METHODS:
            assert result.layer == "layer3" and result.raw.shape == (8, 8)
        else:
            assert result.layer is None and result.raw.shape == (32, 32)
    assert hook_count(se_model) == 0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "hirescam"])
def test_cams_equal_the_library_used_in_its_documented_way(method):
    """Our call (frozen model, graph started at the target layer) gives the library's own result
    for a plain trainable model with the whole graph built from the weights."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
               "hirescam": pgc.HiResCAM}
    reference_model = build("resnet20-lgam")  # requires_grad=True everywhere, as in the library's examples
    x = images(batch=2)
    with classes[method](model=reference_model, target_layers=[reference_model.layer2]) as cam:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(6)])
    frozen = build("resnet20-lgam").requires_grad_(False)
    ours = explain(frozen, x, target=[3, 6], method=method, layer="layer2")
    for result, reference in zip(ours, expected, strict=True):
        np.testing.assert_allclose(result.heatmap, reference, atol=1e-4)


def test_named_layer_and_errors(se_model):
    x = images()
    (first, _) = explain(se_model, x, layer="layer2.1")
    assert first.layer == "layer2.1" and first.raw.shape == (16, 16)
    with pytest.raises(AttnvizError, match="no layer named"):
        explain(se_model, x, layer="layer7")
    with pytest.raises(AttnvizError, match="unknown explanation method"):
        explain(se_model, x, method="magic")
    with pytest.raises(AttnvizError, match="class 12 does not exist"):
        explain(se_model, x, target=12)
    with pytest.raises(AttnvizError, match="input channels"):
        explain(se_model, torch.zeros(1, 1, 32, 32))


def test_targets_predicted_index_list_and_topk(se_model):
    x = images(batch=3)
    with torch.no_grad():
        logits = se_model(x)
    predicted = explain(se_model, x)
    assert [r.target for r in predicted] == logits.argmax(1).tolist()
    listed = explain(se_model, x, target=[1, 2, 3])
    assert [r.target for r in listed] == [1, 2, 3]
    topk = explain(se_model, x, target=("topk", 3))
    assert len(topk) == 9
    for i in range(3):
        rows = [r for r in topk if r.image_index == i]
        assert [r.rank for r in rows] == [0, 1, 2]
        assert [r.target for r in rows] == logits[i].topk(3).indices.tolist()
    # the map for a given class does not depend on how it was asked for
    np.testing.assert_allclose(topk[0].heatmap, explain(se_model, x[:1], target=topk[0].target)[0].heatmap, atol=1e-5)


def test_batch_equals_single_calls(se_model):
    x = images(batch=4)
    batched = explain(se_model, x, target=5)
    for i in range(4):
        single = explain(se_model, x[i:i + 1], target=5)[0]
        np.testing.assert_allclose(batched[i].heatmap, single.heatmap, atol=1e-5)
        np.testing.assert_allclose(batched[i].raw, single.raw, rtol=1e-4, atol=1e-6)


def test_interflow_gets_a_map_per_branch():
    model = build("resnet20-interflow-soft").requires_grad_(False)
    x = images()
    results = explain(model, x, method="gradcam")
    main = [r for r in results if r.branch is None]
    branch = [r for r in results if r.branch is not None]
    assert len(main) == 2 and len(branch) == 6
    assert sorted({(r.branch, r.layer) for r in branch}) == [(0, "layer1"), (1, "layer2"), (2, "layer3")]
    raw_sides = {r.branch: r.raw.shape for r in branch}
    assert raw_sides == {0: (32, 32), 1: (16, 16), 2: (8, 8)}
    for r in branch:  # a branch explains the same class as the model's own map
        assert r.target == main[r.image_index].target
    # the last branch shares the layer with the model's own map but scores its own logits
    assert not np.allclose([r for r in branch if r.branch == 2][0].raw, main[0].raw)
    saliency = explain(model, x, method="saliency")
    assert len(saliency) == 8 and {r.branch for r in saliency} == {None, 0, 1, 2}
    assert len(explain(model, x, branches=False)) == 2


def test_shared_model_is_left_exactly_as_it_was():
    frozen = build("resnet20-cbam").requires_grad_(False)
    x = images(batch=1)
    for method in ("gradcam", "eigencam", "integrated_gradients", "guided_backprop"):
        explain(frozen, x, method=method)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.grad is None for p in frozen.parameters())
    assert not frozen.training and hook_count(frozen) == 0

    trainable = build("resnet20-se").train()
    explain(trainable, x, method="gradcam")
    explain(trainable, x, method="saliency")
    assert all(p.requires_grad for p in trainable.parameters())
    assert all(p.grad is None for p in trainable.parameters())  # no weight gradients were accumulated
    assert all(m.training for m in trainable.modules())  # train mode restored
    assert hook_count(trainable) == 0


def test_four_threads_explaining_one_model_match_single_threaded_results():
    model = build("resnet20-se").requires_grad_(False)
    inputs = [images(seed=100 + i, batch=1) for i in range(4)]
    expected = [explain(model, x, method="gradcam")[0] for x in inputs]
    failures: list[str] = []
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        start.wait()
        for _ in range(6):
            got = explain(model, inputs[index], method="gradcam")[0]
            if got.target != expected[index].target or not np.allclose(got.heatmap, expected[index].heatmap, atol=1e-5):
                failures.append(f"thread {index} got another image's map")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert hook_count(model) == 0


# ---------------------------------------------------------------------------------------------
# A model whose evidence location is known


PATCH = 8


def patch_dataset(n: int, seed: int, side: int = 32) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Noise images with one bright 8x8 patch at a random place; the class is the patch's pattern
    (solid, horizontal stripes, vertical stripes, checkerboard), so all the evidence is in the patch.

    (Classes decided by the patch's *quadrant* do not make a localisation test: a global-average-pooled
    CNN can only tell the quadrant through zero-padding effects, so its evidence for "top-left"
    legitimately sits in the centre of the image.)
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, side, side, generator=generator) * 0.3
    labels = torch.randint(0, 4, (n,), generator=generator)
    corners = torch.randint(0, side - PATCH + 1, (n, 2), generator=generator)
    r = torch.arange(PATCH)
    stripes = (r[:, None] % 2 == 0).float().expand(PATCH, PATCH)
    patterns = torch.stack([torch.ones(PATCH, PATCH), stripes, stripes.t(), ((r[:, None] + r[None, :]) % 2 == 0).float()])
    for i in range(n):
        top, left = corners[i].tolist()
        x[i, :, top:top + PATCH, left:left + PATCH] += 2.5 * patterns[labels[i]]
    return x, labels, [tuple(c) for c in corners.tolist()]


@pytest.fixture(scope="module")
def patch_model():
    """resnet20 at quarter width trained for 120 SGD steps (a few seconds) on ``patch_dataset``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster than two fighting for a busy CPU
    try:
        torch.manual_seed(0)
        model = create_model("resnet20:width=0.25", num_classes=4)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        for step in range(120):
            x, y, _ = patch_dataset(32, seed=step)
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval().requires_grad_(False)
        x, y, corners = patch_dataset(64, seed=10_000)
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
        yield model, x, y, corners, accuracy
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_gradcam_peak_falls_on_the_patch(patch_model):
    model, x, y, corners, accuracy = patch_model
    assert accuracy >= 0.9  # the model learned the task, so its evidence is the patch
    results = explain(model, x, target=y.tolist(), method="gradcam")
    hits = 0
    for result, (top, left) in zip(results, corners, strict=True):
        row, col = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
        # the CAM lives on an 8x8 grid (4-pixel cells): allow one cell around the patch
        hits += (top - 4 <= row < top + PATCH + 4) and (left - 4 <= col < left + PATCH + 4)
    # a random peak would land in the enlarged patch about (16/32)^2 = 25% of the time
    assert hits / len(results) >= 0.7


@pytest.mark.slow
def test_deletion_auc_of_gradcam_beats_a_random_map(patch_model):
    model, x, y, _, _ = patch_model
    cams = np.stack([r.heatmap for r in explain(model, x, target=y.tolist(), method="gradcam")])
    random_maps = np.random.default_rng(0).random(cams.shape).astype(np.float32)
    cam_scores = deletion_insertion(model, x, cams, y.tolist())
    random_scores = deletion_insertion(model, x, random_maps, y.tolist())
    assert cam_scores.deletion_auc.mean() < random_scores.deletion_auc.mean() - 0.05
    assert cam_scores.insertion_auc.mean() > random_scores.insertion_auc.mean() + 0.05


# ---------------------------------------------------------------------------------------------
# Faithfulness metrics, module masks, profiles


def test_deletion_insertion_curves_start_and_end_where_they_must(se_model):
    x = images(batch=2)
    maps = np.random.default_rng(1).random((2, 8, 8))  # any resolution is accepted
    targets = [4, 7]
    scores = deletion_insertion(se_model, x, maps, targets, steps=8)
    with torch.no_grad():
        original = torch.softmax(se_model(x), 1)[[0, 1], targets].numpy()
        mean_image = torch.softmax(se_model(torch.zeros_like(x)), 1)[[0, 1], targets].numpy()
        blur = torch.softmax(se_model(blurred(x)), 1)[[0, 1], targets].numpy()
    assert scores.deletion_curve.shape == (2, 9)
    np.testing.assert_allclose(scores.deletion_curve[:, 0], original, rtol=1e-4)
    np.testing.assert_allclose(scores.deletion_curve[:, -1], mean_image, rtol=1e-4)
    np.testing.assert_allclose(scores.insertion_curve[:, 0], blur, rtol=1e-4)
    np.testing.assert_allclose(scores.insertion_curve[:, -1], original, rtol=1e-4)
    curve = scores.deletion_curve
    np.testing.assert_allclose(scores.deletion_auc, (curve[:, :-1] + curve[:, 1:]).sum(1) / 16, rtol=1e-5)
    with pytest.raises(AttnvizError, match="one map and one target"):
        deletion_insertion(se_model, x, maps[:1], targets)


def test_road_scores_have_one_value_per_image(se_model):
    x = images(batch=2)
    cams = np.stack([r.heatmap for r in explain(se_model, x, method="gradcam")])
    scores = road(se_model, x, cams, [1, 2], percentiles=(20, 50, 80))
    assert set(scores) == {"morf", "lerf", "combined"}
    for values in scores.values():
        assert values.shape == (2,) and np.isfinite(values).all()
    np.testing.assert_allclose(scores["combined"], (scores["lerf"] - scores["morf"]) / 2, rtol=1e-6)


@pytest.mark.parametrize(("spec", "count"), [("resnet20-lgam", 9), ("resnet20-cbam", 9), ("resnet20-bam", 2),
                                             ("resnet20-sge", 9), ("resnet20-se", 0)])
def test_module_masks_are_upsampled_to_the_input(spec, count):
    model = build(spec)
    x = images()
    masks = module_masks(model, x)
    assert len(masks) == count
    for mask in masks.values():
        assert mask.shape == (2, 32, 32)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
    if masks:  # a module's mask is accepted by the faithfulness metrics like any CAM
        site = list(masks)[-1]
        scores = deletion_insertion(model, x, masks[site], [0, 1], steps=4)
        assert np.isfinite(scores.deletion_auc).all()
        normalised = module_masks(model, x, normalise=True)[site]
        assert normalised.min() >= 0.0 and normalised.max() <= 1.0 + 1e-6
        if np.ptp(masks[site][0]) > 1e-6:  # (an untrained SGE's gate is constant: stays 0)
            assert normalised[0].max() == pytest.approx(1.0, abs=1e-5)


def test_specialisation_score_hand_example():
    mean = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    var = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    counts = np.array([10, 10, 1])  # the third class has too few images and is left out
    # between: |(0,0)-(3,4)| = 5; within: mean(sqrt(1), sqrt(1)) = 1
    assert specialisation_score(mean, var, counts) == pytest.approx(5.0)
    assert specialisation_score(mean, var, np.array([10, 1, 1])) == 0.0


def class_batches(seed: int, separated: bool):
    """Two classes; with ``separated`` each class has its own base image, otherwise both share one."""
    generator = torch.Generator().manual_seed(seed)
    bases = torch.randn(2, 3, 32, 32, generator=generator) * 2
    for _ in range(3):
        labels = torch.randint(0, 2, (8,), generator=generator)
        base = bases[labels] if separated else bases[torch.zeros_like(labels)]
        yield base + 0.05 * torch.randn(8, 3, 32, 32, generator=generator), labels


def test_excitation_profiles_and_cache(tmp_path, se_model):
    profiles = excitation_profiles(se_model, class_batches(0, separated=True), num_classes=2)
    assert len(profiles.sites) == 9 and profiles.counts.sum() == 24
    for site in profiles.sites:
        channels = se_model.get_submodule(site).channels
        assert profiles.mean[site].shape == (2, channels) == profiles.std[site].shape
        assert ((profiles.mean[site] > 0) & (profiles.mean[site] < 1)).all()
        assert (profiles.std[site] >= 0).all()
    shuffled = excitation_profiles(se_model, class_batches(0, separated=False), num_classes=2)
    # class-specific inputs give class-specific excitations; identical inputs do not
    deep = "layer3.2.attn"
    assert profiles.specialisation[deep] > 5 * shuffled.specialisation[deep]

    cache = tmp_path / "profiles.npz"
    first = excitation_profiles(se_model, class_batches(1, True), num_classes=2, cache_path=cache)
    assert cache.is_file()

    def must_not_be_read():
        raise AssertionError("the cache should have answered")
        yield

    again = excitation_profiles(se_model, must_not_be_read(), num_classes=2, cache_path=cache)
    assert isinstance(again, ExcitationProfiles) and again.sites == first.sites
    np.testing.assert_allclose(again.mean[deep], first.mean[deep])
    assert again.specialisation == pytest.approx(first.specialisation)
    # other weights (another cache key) recompute instead of returning a stale cache
    other = build("resnet20-se")
    with torch.no_grad():
        other.get_submodule(deep).fc_expand.bias.add_(1.0)
    with pytest.raises(AssertionError, match="cache should have answered"):
        excitation_profiles(other, must_not_be_read(), num_classes=2, cache_path=cache)


# ---------------------------------------------------------------------------------------------
# Overlays


def test_overlay_array_png_and_colormaps():
    picture = Image.new("RGB", (64, 48), (0, 0, 255))
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:, 4:] = 1.0  # right half hot
    blended = overlay(picture, heat, colormap="gray", opacity=1.0)
    assert blended.shape == (48, 64, 3) and blended.dtype == np.uint8
    assert blended[:, :20].max() == 0 and blended[:, 44:].min() == 255  # grey map: 0 -> black, 1 -> white
    half = overlay(picture, heat, colormap="gray", opacity=0.5)
    assert tuple(half[0, 0]) == (0, 0, 128)  # 50% blend of blue and black
    assert not np.array_equal(colorize(heat, "viridis"), colorize(heat, "inferno"))
    png = overlay_png(picture, heat)
    assert Image.open(io.BytesIO(png)).size == (64, 48)
    with pytest.raises(AttnvizError, match="colour map"):
        overlay(picture, heat, colormap="no-such-map")
    with pytest.raises(AttnvizError, match="opacity"):
        overlay(picture, heat, opacity=1.5)


def test_shared_range_gives_one_scale_for_several_maps():
    weak, strong = np.full((4, 4), 0.2), np.full((4, 4), 2.0)
    low, high = shared_range([weak, strong])
    assert (low, high) == (0.2, 2.0)
    # on the shared scale the weak map stays dark and the strong one bright
    assert colorize(weak, "gray", low, high).max() == 0
    assert colorize(strong, "gray", low, high).min() == 255


@pytest.mark.slow  # Score-CAM: one forward pass per channel, twice
def test_score_cam_is_the_librarys_map_without_its_progress_bar(capfd):
    import pytorch_grad_cam as pgc

    model = build("resnet20-se")
    x = images(batch=2)
    ours = explain(model, x, target=[3, 5], method="scorecam", branches=False)
    capfd.readouterr()  # what explain printed on stderr is checked below, separately
    explain(model, x, target=[3, 5], method="scorecam", branches=False)
    assert "it/s" not in capfd.readouterr().err  # no tqdm bar
    layer = model.get_submodule(model.default_cam_layer)

    def score(c):
        return lambda output: output[..., c]

    with pgc.ScoreCAM(model=model, target_layers=[layer]) as cam:  # the library's own class, as shipped
        library = cam(input_tensor=x, targets=[score(3), score(5)])
    for mine, theirs in zip(ours, library, strict=True):
        np.testing.assert_allclose(mine.heatmap, theirs, rtol=1e-5, atol=1e-6)
