"""Attention modules against direct readings of their papers' equations."""

import pytest
import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.bam import BAM
from attnviz.layers.cbam import CBAM
from attnviz.layers.create_attn import create_attn, list_attentions
from attnviz.layers.eca import ECA, eca_kernel_size
from attnviz.layers.lgam import LGAM
from attnviz.layers.sge import SGE
from attnviz.layers.squeeze_excite import SqueezeExcite
from attnviz.layers.taps import AttentionModule, AttnTap
from attnviz.models.interflow import InterflowHead


def lgam_by_the_equations(module: LGAM, A: torch.Tensor) -> torch.Tensor:
    """Equations (1)-(7) of the LGAM paper, one group at a time, with explicit loops."""
    G, Cp = module.groups, module.group_channels
    ys = []
    for k in range(G):
        x_k = A[:, k * Cp:(k + 1) * Cp]
        inp = x_k if k == 0 else x_k + ys[k - 1]  # (4) ladder
        ca = module.channel_attention[0 if module.shared_mlp else k]
        s = torch.stack([inp[:, c].mean() if inp.shape[0] == 1 else inp[:, c].mean(dim=(1, 2))
                         for c in range(Cp)], dim=-1)  # (1) GAP per channel
        m = torch.sigmoid(torch.relu(ca.bn(ca.mlp(s))))  # (2)
        y = m[:, :, None, None] * inp + inp  # (3)
        ys.append(y)
    A1 = torch.cat(ys, dim=1)
    c_spat = sum(A1[:, c] for c in range(A1.shape[1])).unsqueeze(1)  # (5)
    M_spat = torch.sigmoid(torch.relu(c_spat))  # (6)
    return A1 * M_spat + A  # (7)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_lgam_matches_loop_reading_of_equations(groups, shared):
    torch.manual_seed(0)
    module = LGAM(16, groups=groups, reduction=2, shared_mlp=shared).eval()
    for bn in module.modules():  # non-trivial BN statistics
        if isinstance(bn, nn.BatchNorm1d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    A = torch.randn(3, 16, 5, 5) * 0.1
    with torch.no_grad():
        assert torch.allclose(module(A), lgam_by_the_equations(module, A), atol=1e-5)


def test_lgam_ladder_off_is_independent_groups():
    torch.manual_seed(1)
    module = LGAM(8, groups=2, reduction=2, ladder=False).eval()
    A = torch.randn(2, 8, 4, 4)
    B = A.clone()
    B[:, :4] += 1.0  # change group 1 only
    with torch.no_grad():
        a_prime_a = _tap_value(module, A, "tap_a_prime")
        a_prime_b = _tap_value(module, B, "tap_a_prime")
    assert torch.allclose(a_prime_a[:, 4:], a_prime_b[:, 4:])  # group 2 does not see group 1
    ladder = LGAM(8, groups=2, reduction=2, ladder=True).eval()
    ladder.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert not torch.allclose(_tap_value(ladder, A, "tap_a_prime")[:, 4:], _tap_value(ladder, B, "tap_a_prime")[:, 4:])


def _tap_value(module, x, tap_name):
    seen = {}
    handle = getattr(module, tap_name).register_forward_hook(lambda m, i, o: seen.setdefault("v", o.detach()))
    try:
        module(x)
    finally:
        handle.remove()
    return seen["v"]


def test_lgam_rejects_indivisible_groups():
    with pytest.raises(SpecError):
        LGAM(10, groups=4)


def test_se_hidden_width_and_formula():
    se = SqueezeExcite(16, reduction=16)
    assert se.hidden == 1  # the CIFAR setting: one hidden unit at 16 channels
    assert SqueezeExcite(16, reduction=16, min_hidden=4).hidden == 4
    x = torch.randn(2, 16, 6, 6)
    z = x.mean(dim=(2, 3))
    s = torch.sigmoid(se.fc_expand(torch.relu(se.fc_reduce(z))))
    assert torch.allclose(se(x), x * s[:, :, None, None], atol=1e-6)
    felu_se = SqueezeExcite(16, activation="felu")
    from attnviz.layers.activations import felu

    s2 = torch.sigmoid(felu_se.fc_expand(felu(felu_se.fc_reduce(z))))
    assert torch.allclose(felu_se(x), x * s2[:, :, None, None], atol=1e-6)


def test_eca_kernel_rule_and_fixed_kernel():
    assert [eca_kernel_size(c) for c in (16, 64, 256, 512, 2048)] == [3, 3, 5, 5, 7]
    assert ECA(64).kernel_size == 3 and ECA(64, kernel_size=5).kernel_size == 5
    with pytest.raises(SpecError):
        ECA(64, kernel_size=4)


def test_cbam_channel_then_spatial():
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=4).eval()
    x = torch.randn(2, 32, 6, 6)
    mc = torch.sigmoid(cbam.mlp(x.mean((2, 3))) + cbam.mlp(x.amax((2, 3))))
    f1 = x * mc[:, :, None, None]
    ms = torch.sigmoid(cbam.spatial_bn(cbam.spatial_conv(torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], 1))))
    with torch.no_grad():
        assert torch.allclose(cbam(x), f1 * ms, atol=1e-6)
    assert CBAM(32, spatial_bn_zero_init=True).spatial_bn.weight.abs().sum() == 0


@pytest.mark.parametrize("combine", ["sum", "product"])
def test_bam_combination(combine):
    torch.manual_seed(0)
    bam = BAM(32, reduction=4, combine=combine).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        mc = bam.channel_mlp(x.mean((2, 3)))[:, :, None, None]
        ms = bam.spatial_branch(x)
        joint = mc + ms if combine == "sum" else mc * ms
        assert torch.allclose(bam(x), x * (1 + torch.sigmoid(joint)), atol=1e-6)
    with pytest.raises(SpecError):
        BAM(32, combine="max")


def test_sge_groups_capped_and_formula():
    assert SGE(16, groups=64).groups == 16
    sge = SGE(8, groups=2)
    with torch.no_grad():
        sge.weight.fill_(0.7)
        sge.bias.fill_(-0.2)
    x = torch.randn(2, 8, 5, 5)
    g = x.view(2, 2, 4, 5, 5)
    c = (g * g.mean((3, 4), keepdim=True)).sum(2).view(2, 2, -1)
    c = ((c - c.mean(2, keepdim=True)) / (c.std(2, keepdim=True) + 1e-5)).view(2, 2, 5, 5)
    expected = (g * torch.sigmoid(c * 0.7 - 0.2).unsqueeze(2)).view(2, 8, 5, 5)
    assert torch.allclose(sge(x), expected, atol=1e-5)


def test_interflow_modes():
    feats = [torch.randn(4, 8, 8, 8), torch.randn(4, 16, 4, 4), torch.randn(4, 32, 2, 2)]
    hard = InterflowHead([8, 16, 32], 10, "hard", hard_weights=[0.2, 0.3, 0.5])
    out, branches = hard.forward_with_branches(feats)
    assert branches.shape == (4, 3, 10)
    assert torch.allclose(out, 0.2 * branches[:, 0] + 0.3 * branches[:, 1] + 0.5 * branches[:, 2], atol=1e-6)
    assert not any(p is hard.branch_weights for p in hard.parameters())  # hard weights are not learned
    soft = InterflowHead([8, 16, 32], 10, "soft")
    assert soft.branch_weights.shape == (3,) and soft.branch_weights.requires_grad
    per_class = InterflowHead([8, 16, 32], 10, "per_class")
    with torch.no_grad():
        per_class.branch_weights.copy_(torch.rand(3, 10))
    out, branches = per_class.forward_with_branches(feats)
    expected = (branches * per_class.branch_weights[None]).sum(1)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(SpecError):
        InterflowHead([8, 16], 10, "hard", hard_weights=[1.0])
    with pytest.raises(SpecError):
        InterflowHead([8], 10, "mixed")


def test_interflow_aux_loss():
    head = InterflowHead([8, 16], 5, "soft", aux_weight=0.5)
    feats = [torch.randn(3, 8, 4, 4), torch.randn(3, 16, 2, 2)]
    target = torch.tensor([0, 1, 2])
    out, branches = head.forward_with_branches(feats)
    ce = nn.CrossEntropyLoss()
    expected = ce(out, target) + 0.5 * (ce(branches[:, 0], target) + ce(branches[:, 1], target)) / 2
    assert torch.allclose(head.loss(out, branches, target, ce), expected)


@pytest.mark.parametrize("name", [n for n in list_attentions() if n != "none"])
def test_every_attention_is_tapped_and_shape_preserving(name):
    module = create_attn(name, 32)
    assert isinstance(module, AttentionModule) and module.taps()
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    fired = []
    handles = [t.register_forward_hook(lambda m, i, o, n=n: fired.append(n)) for n, t in module.taps().items()]
    try:
        y = module(x)
    finally:
        for h in handles:
            h.remove()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert sorted(fired) == sorted(module.taps())
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert create_attn("none", 32) is None
    assert all(isinstance(t, AttnTap) for t in module.taps().values())


@pytest.mark.parametrize("name", [n for n in list_attentions() if n != "none"])
def test_every_attention_keeps_a_bf16_feature_map_bf16_under_autocast(name):
    # a float32 output (e.g. a bf16 map times a gate built from float32 parameters) would copy every
    # feature map to float32 in bf16 training (SGE did: benchmarks/module_fast_paths.py)
    module = create_attn(name, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(torch.randn(2, 32, 8, 8).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_lgam_ladder_amplifies_features_at_initialisation():
    """The measurement behind LGAM's docstring note: with the ladder, a ResNet-20's stage outputs at
    initialisation are several times larger than without attention; without the ladder much less so."""
    from attnviz.stats import init_stage_std as stage_std

    plain, lgam, no_ladder = stage_std("resnet20"), stage_std("resnet20-lgam"), stage_std("resnet20-lgam:ladder=false")
    assert lgam > 3 * plain and no_ladder < lgam / 1.5


def test_sge_min_group_channels_caps_the_group_count():
    assert [SGE(c).groups for c in (16, 32, 64)] == [16, 32, 64]  # the paper's G = 64, capped by C
    assert [SGE(c, min_group_channels=4).groups for c in (16, 32, 64)] == [4, 8, 16]
    assert SGE(256, min_group_channels=4).groups == 64  # wide layers keep G = 64
    with pytest.raises(SpecError, match="min_group_channels"):
        SGE(16, min_group_channels=0)


def test_lgam_spatial_map_state_tells_off_saturated_flat_and_varying_maps_apart():
    from attnviz.layers.lgam import LGAM, spatial_map_state

    assert spatial_map_state(torch.full((8, 8), 0.5)) == "off"
    assert spatial_map_state(torch.ones(8, 8)) == "saturated"
    assert spatial_map_state(torch.full((8, 8), 0.73)) == "flat"
    assert spatial_map_state(torch.linspace(0.5, 1.0, 64).view(8, 8)) == "varies"
    # a real module: an all-negative input makes eq. (5)'s sum negative everywhere, so its map is off
    module = LGAM(16, groups=4).eval()
    taps = {}
    module.tap_spatial.register_forward_hook(lambda _m, _i, out: taps.setdefault("spatial", out))
    module(-torch.rand(1, 16, 8, 8) - 1.0)
    assert spatial_map_state(taps["spatial"][0, 0]) == "off"


def test_lgam_gate_usage_counts_dead_channel_gates_map_states_and_live_positions():
    from attnviz.layers.lgam import LGAM, gate_usage

    weights = torch.tensor([[0.5, 0.5, 0.7], [0.5, 0.6, 0.5]])  # channel 0 is 0.5 for both pictures: dead
    maps = torch.stack([torch.full((1, 4, 4), 0.5), torch.linspace(0.5, 1.0, 16).view(1, 4, 4)])
    usage = gate_usage(weights, maps)
    assert (usage.pictures, usage.channel_gates, usage.dead_channel_gates) == (2, 3, 1)
    assert usage.spatial_states == {"off": 1, "saturated": 0, "flat": 0, "varies": 1}
    # live: strictly inside (0.5, 1 - 1e-3): 14 of the second map's 16 values, none of the first's
    assert usage.live_positions == pytest.approx(14 / 32)
    assert usage.dead_channel_fraction == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same B"):
        gate_usage(weights, maps[:1])
    # a real module on all-negative input: every map is off, no position is live
    module = LGAM(16, groups=4).eval()
    taps = {}
    module.tap_spatial.register_forward_hook(lambda _m, _i, out: taps.setdefault("spatial", out))
    module.tap_group_channel.register_forward_hook(lambda _m, _i, out: taps.setdefault("channel", out))
    module(-torch.rand(3, 16, 8, 8) - 1.0)
    usage = gate_usage(taps["channel"], taps["spatial"])
    assert usage.spatial_states["off"] == 3 and usage.live_positions == 0.0


def test_a_models_gate_usage_counts_frozen_sites_and_dead_gates_over_its_sites():
    from attnviz.layers.lgam import ModelGateUsage, gate_usage

    weights = torch.tensor([[0.5, 0.5, 0.7], [0.5, 0.6, 0.5]])
    off = torch.full((2, 1, 4, 4), 0.5)
    mixed = torch.stack([torch.full((1, 4, 4), 1.0), torch.linspace(0.5, 1.0, 16).view(1, 4, 4)])
    saturated_then_off = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 0.5)])
    usage = ModelGateUsage({"a": gate_usage(weights, off), "b": gate_usage(weights, mixed),
                            "c": gate_usage(weights[:, :2], saturated_then_off)})
    assert usage.pictures == 2
    assert usage.frozen_sites == ["a", "c"]  # b's second map varies: a picture still trains it
    assert (usage.dead_channel_gates, usage.channel_gates) == (3, 8)
    assert ModelGateUsage({}).pictures == 0 and ModelGateUsage({}).frozen_sites == []


def test_spatial_reduce_of_reads_how_a_model_pools_eq5():
    from attnviz.layers.lgam import spatial_reduce_of
    from attnviz.models.registry import create_model

    assert spatial_reduce_of(create_model("resnet20-lgam")) == "sum"
    assert spatial_reduce_of(create_model("resnet20-lgam:spatial_reduce=mean")) == "mean"
    assert spatial_reduce_of(create_model("resnet20-se")) is None
