"""probe(): records for every attention kind, hook hygiene, thread safety, dead SE units."""

from __future__ import annotations

import threading

import pytest
import torch

from attnviz.analysis.probes import attention_sites, dead_unit_fraction, dead_units, probe
from attnviz.errors import AttnvizError
from attnviz.models.registry import create_model

BATCH = 3


def build(spec: str, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(spec, num_classes=num_classes).eval()


def images(seed: int = 1, batch: int = BATCH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=generator)


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def in_unit_interval(t: torch.Tensor, low: float = 0.0) -> bool:
    return bool(((t >= low) & (t <= 1.0)).all()) and bool(torch.isfinite(t).all())


# Spatial sizes of the three ResNet-20 stages at 32x32 input.
STAGE_SIDES = {"layer1": 32, "layer2": 16, "layer3": 8}
STAGE_CHANNELS = {"layer1": 16, "layer2": 32, "layer3": 64}


def stage_of(site: str) -> str:
    return site.split(".")[0]


@pytest.mark.parametrize("spec", ["resnet20-se", "resnet20-se-felu"])
def test_se_records(spec):
    model = build(spec)
    result = probe(model, images())
    assert len(result) == 9  # one per BasicBlock
    for record in result:
        channels = STAGE_CHANNELS[stage_of(record.site)]
        assert record.kind == "se"
        assert record.channel_weights.shape == (BATCH, channels)
        assert in_unit_interval(record.channel_weights)
        module = model.get_submodule(record.site)
        assert record.hidden.shape == (BATCH, module.hidden)
        # the recorded weights are what the module applies: recompute from the hidden pre-activation
        expected = torch.sigmoid(module.fc_expand(module.act(record.hidden)))
        torch.testing.assert_close(record.channel_weights, expected, rtol=1e-5, atol=1e-6)
        assert record.spatial is None and record.branch_logits is None


def test_eca_records():
    result = probe(build("resnet20-eca"), images())
    assert [r.kind for r in result] == ["eca"] * 9
    for record in result:
        assert record.channel_weights.shape == (BATCH, STAGE_CHANNELS[stage_of(record.site)])
        assert in_unit_interval(record.channel_weights)
        assert record.hidden is None


def test_cbam_records():
    result = probe(build("resnet20-cbam"), images())
    for record in result:
        side = STAGE_SIDES[stage_of(record.site)]
        assert record.kind == "cbam"
        assert record.channel_weights.shape == (BATCH, STAGE_CHANNELS[stage_of(record.site)])
        assert record.spatial.shape == (BATCH, 1, side, side)  # native resolution
        assert in_unit_interval(record.channel_weights) and in_unit_interval(record.spatial)
    assert set(result.spatial_maps()) == set(result.sites)


def test_bam_records():
    result = probe(build("resnet20-bam"), images())
    assert list(result.sites) == ["layer1.attn", "layer2.attn"]  # after stages 1..n-1
    for record in result:
        side, channels = STAGE_SIDES[stage_of(record.site)], STAGE_CHANNELS[stage_of(record.site)]
        assert record.kind == "bam"
        assert record.channel_logits.shape == (BATCH, channels)
        assert record.spatial_logits.shape == (BATCH, 1, side, side)
        assert record.gate.shape == (BATCH, channels, side, side)
        assert in_unit_interval(record.gate)
        torch.testing.assert_close(record.gate, torch.sigmoid(record.channel_logits[:, :, None, None] + record.spatial_logits))
        torch.testing.assert_close(record.spatial, record.gate.mean(dim=1, keepdim=True))
        assert record.channel_weights is None  # BAM has no post-sigmoid channel gate of its own


def test_sge_records():
    model = build("resnet20-sge")
    result = probe(model, images())
    for record in result:
        side = STAGE_SIDES[stage_of(record.site)]
        groups = model.get_submodule(record.site).groups
        assert record.kind == "sge"
        assert record.spatial.shape == (BATCH, groups, side, side)
        assert in_unit_interval(record.spatial)


def test_lgam_records():
    model = build("resnet20-lgam")
    x = images()
    result = probe(model, x, keep_feature_taps=True)
    for record in result:
        side, channels = STAGE_SIDES[stage_of(record.site)], STAGE_CHANNELS[stage_of(record.site)]
        assert record.kind == "lgam"
        assert record.groups == model.get_submodule(record.site).groups
        assert record.group_channel_weights.shape == (BATCH, channels)
        assert record.spatial.shape == (BATCH, 1, side, side)
        # sigmoid(relu(.)) lies in [0.5, 1] (eqs. (2) and (6))
        assert in_unit_interval(record.group_channel_weights, low=0.5) and in_unit_interval(record.spatial, low=0.5)
        for norm in (record.a_prime_norm, record.a_double_prime_norm, record.input_norm):
            assert norm.shape == (BATCH,) and bool((norm > 0).all())
        torch.testing.assert_close(record.a_prime_norm, record.taps["a_prime"].flatten(1).norm(dim=1))
        torch.testing.assert_close(record.a_double_prime_norm, record.taps["output"].flatten(1).norm(dim=1))
    # by default the big A'/A'' tensors are not kept, only their norms
    lean = probe(model, x)
    assert all("a_prime" not in r.taps and r.a_prime_norm is not None for r in lean)


@pytest.mark.parametrize("mode", ["hard", "soft", "per_class"])
def test_interflow_records(mode):
    model = build(f"resnet20-interflow-{mode}", num_classes=7)
    x = images()
    result = probe(model, x)
    head = result["head"]
    assert head.kind == "interflow" and head.mode == mode
    assert head.branch_logits.shape == (BATCH, 3, 7)
    torch.testing.assert_close(head.branch_probs.sum(dim=-1), torch.ones(BATCH, 3))
    expected_weights = (3, 7) if mode == "per_class" else (3,)
    assert tuple(head.branch_weights.shape) == expected_weights
    weights = head.branch_weights if mode == "per_class" else head.branch_weights[:, None]
    torch.testing.assert_close(head.output, (head.branch_logits * weights[None]).sum(dim=1))
    torch.testing.assert_close(result.logits, head.output)
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(x))


def test_attention_plus_interflow_and_model_without_attention():
    result = probe(build("resnet20-se-interflow-soft"), images())
    assert len(result.of_kind("se")) == 9 and len(result.of_kind("interflow")) == 1
    plain = probe(build("resnet20"), images())
    assert len(plain) == 0 and plain.logits.shape == (BATCH, 10)


def test_feature_layers_and_copies():
    model = build("resnet20-se")
    x = images()
    result = probe(model, x, feature_layers=["layer1", "layer3.2.attn"])
    assert result.features["layer1"].shape == (BATCH, 16, 32, 32)
    assert result.features["layer3.2.attn"].shape == (BATCH, 64, 8, 8)
    record = result["layer1.0.attn"]
    assert not record.channel_weights.requires_grad and record.channel_weights.device.type == "cpu"
    before = record.channel_weights.clone()
    probe(model, images(seed=5))  # a second probe must not change the first one's records
    torch.testing.assert_close(record.channel_weights, before)
    with pytest.raises(AttnvizError, match="no layer named"):
        probe(model, x, feature_layers=["layer9"])
    assert hook_count(model) == 0


def test_hooks_removed_and_modes_restored_even_when_forward_raises():
    model = build("resnet20-cbam")
    model.train()
    baseline = hook_count(model)
    with pytest.raises(RuntimeError):
        probe(model, torch.randn(2, 5, 32, 32), feature_layers=["layer2"])  # wrong channel count
    assert hook_count(model) == baseline == 0
    assert all(m.training for m in model.modules())  # eval_mode was temporary
    probe(model, images())
    assert all(m.training for m in model.modules())
    assert hook_count(model) == 0


def test_probe_costs_nothing_when_not_recording():
    model = build("resnet20-lgam")
    x = images()
    result = probe(model, x)
    assert hook_count(model) == 0  # nothing stays behind after the call
    sites = attention_sites(model)
    taps = [t for s in sites.values() for t in s.taps().values()]
    assert len(taps) == 9 * 4
    assert all(t(x) is x for t in taps)  # a tap hands its input through untouched: no copy, no op
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.logits)  # recording did not change the output


def test_two_threads_probing_one_model_get_their_own_records():
    model = build("resnet20-se")
    inputs = [images(seed=10), images(seed=20)]
    expected = [probe(model, x) for x in inputs]
    errors: list[str] = []
    start = threading.Barrier(3)

    def worker(index: int) -> None:
        start.wait()
        for _ in range(15):
            result = probe(model, inputs[index])
            for site, record in result.sites.items():
                if not torch.equal(record.channel_weights, expected[index][site].channel_weights):
                    errors.append(f"thread {index}: wrong record at {site}")
                    return

    def plain_inference() -> None:  # lock-free forward passes on the same model must not leak in
        start.wait()
        with torch.no_grad():
            for _ in range(30):
                model(images(seed=30))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)] + [threading.Thread(target=plain_inference)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert hook_count(model) == 0


def test_dead_units_counts_units_that_never_fire():
    model = build("resnet20-se")
    x = images(batch=8)
    # switch off every hidden unit of one site: pre-activation W1 z + b <= 0 for every image
    site = "layer2.1.attn"
    with torch.no_grad():
        model.get_submodule(site).fc_reduce.bias.fill_(-1e4)
    result = probe(model, x)
    counts = dead_units(result)
    hidden = model.get_submodule(site).hidden
    assert counts.per_site[site] == (hidden, hidden)
    total_hidden = sum(m.hidden for m in attention_sites(model).values())
    assert counts.total == total_hidden
    # every other unit: dead iff <= 0 for all 8 images
    expected_dead = sum(int((r.hidden <= 0).all(dim=0).sum()) for r in result)
    assert counts.dead == expected_dead >= hidden
    assert dead_unit_fraction(result) == pytest.approx(expected_dead / total_hidden)
    assert 0.0 <= counts.site_fractions()[site] == 1.0
    # a model without SE has no excitation units
    assert dead_unit_fraction(probe(build("resnet20-cbam"), x)) == 0.0


def test_summary_is_plain_data():
    import json

    result = probe(build("resnet20-lgam-interflow-per_class"), images())
    text = json.dumps(result.summary())
    assert '"kind": "lgam"' in text and '"kind": "interflow"' in text
