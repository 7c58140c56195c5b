"""Conventions checked over every registered architecture x attention (torchvision-style)."""

import pytest
import torch
from torch import nn

from attnviz.analysis.probes import attention_sites
from attnviz.errors import SpecError
from attnviz.layers.create_attn import list_attentions
from attnviz.layers.taps import AttnTap
from attnviz.models.registry import (
    create_model,
    list_archs,
    list_models,
    parse_spec,
    register_arch,
)
from attnviz.stats import count_flops, count_params, init_stage_std

# width=0.25 keeps the big backbones small enough for a fast test; the structure is the same
SPECS = [s for s in list_models() if not s.startswith(("resnet32", "resnet56", "resnet110"))]


def _small(spec: str) -> str:
    return spec if spec.startswith("resnet20") else f"{spec}:width=0.25"


@pytest.mark.parametrize("spec", SPECS)
def test_forward_backward_every_parameter_and_tap(spec):
    torch.manual_seed(0)
    model = create_model(_small(spec), num_classes=7)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    taps = {n: m for n, m in model.named_modules() if isinstance(m, AttnTap)}
    fired = set()
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: fired.add(n)) for n, m in taps.items()]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert fired == set(taps)
    out.logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    assert all(not m._forward_hooks for m in model.modules())
    # conventions every zoo model keeps
    assert model.spec == parse_spec(spec).canonical() + (":width=0.25" if _small(spec) != spec else "")
    model.get_submodule(model.default_cam_layer)
    assert len(model.stage_names) == len(model.stage_channels) >= 3
    for m in model.modules():
        assert not getattr(m, "inplace", False), f"in-place activation in {spec}"
    sites = attention_sites(model)
    if "interflow" in spec:
        assert "head" in sites
    elif spec != spec.split("-")[0]:
        assert sites, f"{spec} has no attention site"


@pytest.mark.parametrize("spec", ["resnet20", "resnet20-se-felu", "resnet20-lgam", "resnet20-cbam", "resnet20-bam",
                                  "resnet20-sge", "resnet20-eca", "resnet20-interflow-per_class",
                                  "vgg16-interflow-soft:width=0.25", "resnet18-lgam:width=0.25"])
def test_full_backward_hooks_on_every_module(spec):
    """In-place ops or reused modules break full backward hooks (the usual grad-cam/captum failure)."""
    model = create_model(spec)
    handles, called = [], []
    for name, module in model.named_modules():
        if module is model or isinstance(module, nn.Sequential) or name == "head":
            continue  # containers / list-input heads: hooks need tensor inputs
        handles.append(module.register_full_backward_hook(lambda m, gi, go, n=name: called.append(n)))
    try:
        x = torch.randn(2, 3, 32, 32, requires_grad=True)
        model(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert called
    assert all(not m._backward_hooks for m in model.modules())


def test_grey_scale_input():
    model = create_model("resnet20-se", num_classes=10, in_chans=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("bad", ["", "resnet21", "resnet20-foo", "resnet20-interflow", "resnet20-interflow-x",
                                 "resnet20-lgam-felu", "resnet20-se:reduction", "resnet20-se:nonsense=3",
                                 "resnet20@stage", "resnet20-se@middle", "resnet20-se-felu-x",
                                 "resnet20-lgam:groups=3"])
def test_bad_specs_are_one_sentence_errors(bad):
    with pytest.raises(SpecError) as info:
        create_model(bad)
    message = str(info.value)
    assert message and "\n" not in message


def test_spec_parsing_and_canonical_names():
    p = parse_spec("ResNet20-SE-FeLU")
    assert (p.arch, p.attention, p.activation) == ("resnet20", "se", "felu")
    assert parse_spec("resnet20-se-relu").canonical() == "resnet20-se"
    p = parse_spec("vgg16-interflow-soft:width=0.5")
    assert p.interflow == "soft" and p.options == {"width": 0.5}
    assert parse_spec("resnet20-bam").effective_placement == "stage"
    assert parse_spec("resnet20-se").effective_placement == "block"
    model = create_model("resnet20-interflow-hard:hard_weights=0.2/0.3/0.5")
    assert model.head.branch_weights.tolist() == pytest.approx([0.2, 0.3, 0.5])
    assert sorted(set(a for a in list_attentions())) == sorted(["none", "se", "lgam", "cbam", "bam", "sge", "eca"])


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError):
        register_arch("resnet20", lambda in_chans, block_attn: None)
    assert "resnet20" in list_archs()


def test_placements():
    block = create_model("resnet20-se")
    assert len(attention_sites(block)) == 9  # one per BasicBlock
    stage = create_model("resnet20-se@stage")
    assert list(attention_sites(stage)) == ["layer1.attn", "layer2.attn", "layer3.attn"]
    bam = create_model("resnet20-bam")  # BAM paper: at the bottlenecks, not after the last stage
    assert list(attention_sites(bam)) == ["layer1.attn", "layer2.attn"]


def test_resnet20_counts():
    model = create_model("resnet20")
    assert 0.26e6 < count_params(model) < 0.28e6  # He et al.: 0.27 M
    assert 40e6 < count_flops(model) / 2 < 42e6  # ~41 M multiply-adds


def test_shortcut_a_has_no_projection_parameters():
    assert count_params(create_model("resnet20:shortcut=A")) < count_params(create_model("resnet20"))
    assert 0.26e6 < count_params(create_model("resnet20:shortcut=A")) < 0.2705e6


def test_zero_init_residual_makes_every_block_start_as_the_identity():
    torch.manual_seed(0)
    model = create_model("resnet20-lgam:zero_init_residual=true").eval()
    assert model.spec == "resnet20-lgam:zero_init_residual=true"
    block = model.get_submodule("layer1.1")  # stride 1, identity shortcut
    x = torch.relu(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
    plain = create_model("resnet20-lgam")
    assert all(float(m.weight.detach().abs().sum()) > 0 for m in plain.modules() if getattr(m, "residual_bn", False))
    with pytest.raises(SpecError, match="BatchNorm"):
        create_model("vgg16:zero_init_residual=true")
    with pytest.raises(SpecError, match="true or false"):
        create_model("resnet20:zero_init_residual=3")


def test_residual_bn_gamma_starts_lgam_branches_near_the_plain_scale():
    model = create_model("resnet20-lgam:residual_bn_gamma=0.25")
    gammas = {float(w) for m in model.modules() if getattr(m, "residual_bn", False) for w in m.weight.detach()}
    assert gammas == {0.25}
    plain, lgam = init_stage_std("resnet20"), init_stage_std("resnet20-lgam")
    damped = init_stage_std("resnet20-lgam:residual_bn_gamma=0.25")
    assert lgam > 3 * plain  # LGAM's gain at the usual initialisation (attnviz/layers/lgam.py)
    assert 0.6 * plain < damped < 1.4 * plain
    for bad in ("0", "1.5", "-0.1", "true", "big"):
        with pytest.raises(SpecError, match="residual_bn_gamma"):
            create_model(f"resnet20:residual_bn_gamma={bad}")
    with pytest.raises(SpecError, match="not both"):
        create_model("resnet20:zero_init_residual=true,residual_bn_gamma=0.5")
    with pytest.raises(SpecError, match="residual_bn_gamma needs residual branches"):
        create_model("vgg16:residual_bn_gamma=0.5")
