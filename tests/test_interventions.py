"""attnviz.analysis.interventions on the shipped checkpoints: each override does what it says, the model is restored
bit-exactly (also after an exception), other threads are untouched, bad requests are one sentence."""

from __future__ import annotations

import threading

import pytest
import torch

from attnviz import load_checkpoint
from attnviz.analysis.interventions import (
    Intervention,
    accuracy_with,
    intervene,
    intervention_effect,
    intervention_sites,
    predict,
    readout_means,
)
from attnviz.analysis.probes import probe
from attnviz.data import load_dataset, preprocess
from attnviz.errors import AttnvizError


@pytest.fixture(scope="module")
def sample():
    return load_dataset("sample")


def _load(name: str, sample, per_class: int = 2):
    model, card = load_checkpoint(name)
    model.requires_grad_(False)
    images = sample.subset(test_per_class=per_class)
    return model, preprocess(images.test_images, card["mean"], card["std"]), images.test_labels


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, state, x, logits):
    now = model.state_dict()
    assert state.keys() == now.keys()
    assert all(torch.equal(state[k], now[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(x), logits)  # bit-identical outputs
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())


MOST_VARIED_SPATIAL_SITE = "<the site whose spatial mask varies most>"


def _most_varied_spatial_site(model, x) -> str:
    result = probe(model, x)
    spread = {site: float(result[site].taps["spatial"].flatten(1).std(1).mean())
              for site in intervention_sites(model) if "spatial" in result[site].taps}
    return max(spread, key=spread.get)


CASES = [
    ("resnet20-se", "layer2.0.attn", "channel_ones", {}),
    ("resnet20-se", "layer3.2.attn", "channel_zero_topk", {"k": 8}),
    ("resnet20-se", "layer1.1.attn", "channel_mean", {}),
    ("resnet20-se-felu", "layer2.1.attn", "channel_ones", {}),
    ("resnet20-eca", "layer2.0.attn", "channel_ones", {}),
    ("resnet20-cbam", "layer1.0.attn", "spatial_ones", {}),
    ("resnet20-cbam", "layer2.0.attn", "channel_zero_topk", {"k": 3}),
    # LGAM's eq. 5 mask saturates to a constant at some sites of a trained model (which ones changes with each
    # retraining), and a constant mask's own mean is itself: the case takes the site whose mask varies most
    ("resnet20-lgam", MOST_VARIED_SPATIAL_SITE, "spatial_mean", {}),
    ("resnet20-bam", "layer1.attn", "spatial_ones", {}),
    ("resnet20-sge", "layer2.0.attn", "spatial_ones", {}),
    ("resnet20-interflow-soft", "head", "branch_only", {"branch": 0}),
    ("resnet20-interflow-per_class", "head", "branch_off", {"branch": 2}),
]


@pytest.mark.parametrize(("name", "site", "method", "kwargs"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_every_intervention_changes_outputs_and_restores_the_model_exactly(sample, name, site, method, kwargs):
    model, x, _ = _load(name, sample)
    if site == MOST_VARIED_SPATIAL_SITE:
        site = _most_varied_spatial_site(model, x)
    state = _snapshot(model)
    with torch.no_grad():
        logits = model(x)
    with intervene(model, [Intervention(site, method, **kwargs)]) as same:
        assert same is model
        with torch.no_grad():
            changed = model(x)
    assert not torch.equal(changed, logits)
    assert (changed - logits).abs().max() > 1e-3  # a real change, not rounding
    _assert_untouched(model, state, x, logits)


def test_model_is_restored_after_an_exception_inside_the_block(sample):
    model, x, _ = _load("resnet20-se", sample)
    state = _snapshot(model)
    with torch.no_grad():
        logits = model(x)
    with pytest.raises(RuntimeError, match="boom"), intervene(model, [Intervention("layer1.0.attn", "channel_ones"),
                                                                       Intervention("layer3.0.attn", "channel_ones")]):
        with torch.no_grad():
            model(x)
        raise RuntimeError("boom")
    _assert_untouched(model, state, x, logits)


def test_overrides_are_what_they_say_seen_by_a_probe_inside_the_block(sample):
    model, x, _ = _load("resnet20-se", sample)
    before = probe(model, x)["layer2.1.attn"].channel_weights
    with intervene(model, Intervention("layer2.1.attn", "channel_ones")):
        assert torch.equal(probe(model, x)["layer2.1.attn"].channel_weights, torch.ones_like(before))
    with intervene(model, Intervention("layer2.1.attn", "channel_zero_topk", k=5)):
        zeroed = probe(model, x)["layer2.1.attn"].channel_weights
    top = before.topk(5, dim=1).indices
    assert torch.equal(zeroed.gather(1, top), torch.zeros_like(top, dtype=zeroed.dtype))
    untouched = torch.ones_like(before, dtype=torch.bool).scatter(1, top, False)
    assert torch.equal(zeroed[untouched], before[untouched])
    mean = before.mean(dim=0)
    with intervene(model, Intervention("layer2.1.attn", "channel_mean", value=mean)):
        assert torch.allclose(probe(model, x)["layer2.1.attn"].channel_weights, mean.expand_as(before))
    table = torch.rand(10, before.shape[1])
    classes = list(range(x.shape[0] % 10)) + [0] * (x.shape[0] - x.shape[0] % 10)
    with intervene(model, Intervention("layer2.1.attn", "channel_class_mean", value=table, classes=classes)):
        assert torch.allclose(probe(model, x)["layer2.1.attn"].channel_weights, table[classes])


def test_spatial_and_branch_overrides(sample):
    model, x, _ = _load("resnet20-lgam", sample)
    spatial = probe(model, x)["layer2.0.attn"].spatial
    with intervene(model, Intervention("layer2.0.attn", "spatial_mean")):
        flat = probe(model, x)["layer2.0.attn"].spatial
    assert torch.allclose(flat, spatial.mean(dim=(2, 3), keepdim=True).expand_as(spatial))

    model, x, _ = _load("resnet20-interflow-soft", sample)
    result = probe(model, x)
    branch_logits = result["head"].branch_logits
    with intervene(model, Intervention("head", "branch_only", branch=1)), torch.no_grad():
        assert torch.allclose(model(x), branch_logits[:, 1], atol=1e-5)  # the branch's own logits
    weights = result["head"].branch_weights
    with intervene(model, Intervention("head", "branch_off", branch=0)), torch.no_grad():
        expected = (branch_logits[:, 1:] * weights[None, 1:, None]).sum(dim=1)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_another_threads_forward_is_not_affected(sample):
    model, x, _ = _load("resnet20-se", sample)
    with torch.no_grad():
        logits = model(x)
    seen = {}

    def other_thread():
        with torch.no_grad():
            seen["logits"] = model(x)  # a plain, lock-free inference on the shared model

    with intervene(model, Intervention("layer2.0.attn", "channel_ones")):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(timeout=60)
        with torch.no_grad():
            mine = model(x)
    assert torch.equal(seen["logits"], logits)
    assert not torch.equal(mine, logits)


def test_interventions_change_predictions_measurably_on_a_shipped_checkpoint(sample):
    model, x, labels = _load("resnet20-se", sample, per_class=50)  # the sample's 500 test images
    state = _snapshot(model)
    with torch.no_grad():
        logits = model(x)
    reference = predict(model, x)
    sites = list(intervention_sites(model))
    off = accuracy_with(model, x, labels, [Intervention(s, "channel_ones") for s in sites], reference=reference)
    assert off["n"] == 500
    assert off["changed"] > 0.10  # switching every SE block off changes at least 1 in 10 predictions
    assert off["drop"] > 2 * off["drop_se"] > 0  # and costs accuracy beyond the paired noise
    means = readout_means(model, [x[:250], x[250:]])
    with_means = [Intervention(s, "channel_mean", value=means[s]["channel"]) for s in sites]
    mean_stats = accuracy_with(model, x, labels, with_means, reference=reference)
    assert mean_stats["changed"] < off["changed"]  # the average recalibration keeps more than none at all
    _assert_untouched(model, state, x, logits)


def test_readout_means_shapes_and_class_averages(sample):
    model, x, labels = _load("resnet20-cbam", sample, per_class=3)
    means = readout_means(model, [(x, labels)])
    entry = means["layer2.0.attn"]
    assert entry["channel"].shape == (32,)
    assert entry["spatial"].shape == (1, 16, 16)
    assert entry["channel_by_class"].shape == (10, 32)
    direct = probe(model, x)["layer2.0.attn"].channel_weights
    assert torch.allclose(entry["channel"], direct.mean(dim=0), atol=1e-6)
    assert torch.allclose(entry["channel_by_class"][labels[0]], direct[labels == labels[0]].mean(dim=0), atol=1e-6)
    model, x, _ = _load("resnet20-bam", sample, per_class=1)
    assert readout_means(model, [x])["layer1.attn"]["spatial"].shape == (16, 32, 32)  # BAM's joint gate


def test_intervention_effect_explains_the_same_class_before_and_after(sample):
    model, x, _ = _load("resnet20-se", sample, per_class=1)
    state = _snapshot(model)
    with torch.no_grad():
        logits = model(x)
    effect = intervention_effect(model, x[:3], Intervention("layer3.0.attn", "channel_zero_topk", k=16))
    assert effect.heatmaps_before.shape == effect.heatmaps_after.shape == (3, 32, 32)
    assert effect.targets == effect.predicted_before.tolist()
    assert not (effect.probs_before == effect.probs_after).all()
    assert not (effect.heatmaps_before == effect.heatmaps_after).all()  # Grad-CAM sees the intervention
    _assert_untouched(model, state, x, logits)


BAD = [
    (Intervention("layer9.0.attn", "channel_ones"), "no attention site 'layer9.0.attn'"),
    (Intervention("layer1.0.attn", "spatial_ones"), "does not apply to layer1.0.attn (se)"),
    (Intervention("layer1.0.attn", "channel_zero_topk", k=0), "k must be a whole number from 1 to 16"),
    (Intervention("layer1.0.attn", "channel_zero_topk", k=17), "k must be a whole number from 1 to 16"),
    (Intervention("layer1.0.attn", "channel_zero_topk", k=2.5), "k must be a whole number"),
    (Intervention("layer1.0.attn", "channel_mean", value=[0.5] * 3), "has 16 channels"),
    (Intervention("layer1.0.attn", "channel_class_mean"), "needs the class-average table"),
    (Intervention("layer1.0.attn", "unplug"), "unknown intervention 'unplug'"),
    (Intervention("layer1.0.attn", "branch_off", branch=0), "is not an Interflow head"),
]


@pytest.mark.parametrize(("intervention", "message"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_requests_are_one_sentence_and_leave_the_model_untouched(sample, intervention, message):
    model, x, _ = _load("resnet20-se", sample, per_class=1)
    state = _snapshot(model)
    with torch.no_grad():
        logits = model(x)
    with pytest.raises(AttnvizError) as err, intervene(model, [intervention]):
        pytest.fail("the block must not run")
    text = str(err.value)
    assert message in text and "\n" not in text and "Traceback" not in text
    _assert_untouched(model, state, x, logits)


def test_method_not_applying_names_the_reason(sample):
    lgam, x, _ = _load("resnet20-lgam", sample, per_class=1)
    with pytest.raises(AttnvizError, match="only its spatial mask can be overridden"), \
            intervene(lgam, Intervention("layer1.0.attn", "channel_ones")):
        pass
    interflow, _, _ = _load("resnet20-interflow-soft", sample, per_class=1)
    with pytest.raises(AttnvizError, match="branch must be a whole number from 0 to 2"), \
            intervene(interflow, Intervention("head", "branch_only", branch=3)):
        pass
    both = [Intervention("layer1.0.attn", "spatial_ones"), Intervention("layer1.0.attn", "spatial_mean")]
    with pytest.raises(AttnvizError, match="the same readout"), intervene(lgam, both):
        pass
    assert all(not m._forward_hooks for m in lgam.modules())
    assert set(intervention_sites(interflow)) == {"head"}
    assert intervention_sites(lgam)["layer1.0.attn"]["methods"] == ["spatial_ones", "spatial_mean"]
