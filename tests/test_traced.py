"""`attnviz.analysis.traced`: scoring's forward passes through a traced graph give the eager numbers exactly,
and anything that needs the Python modules (hooks, gradients, training mode, a model that cannot be traced)
runs eagerly."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.analysis import traced
from attnviz.analysis.faithfulness import deletion_insertion
from attnviz.models.registry import create_model, list_models

SPECS = [s for s in list_models() if s.startswith("resnet20")] + ["vgg16-interflow-soft:width=0.25"]
# SGE's std correction branches on the map's size (``h * w > 1``): a TracerWarning, so it runs eagerly
RUN_EAGERLY = {"resnet20-sge"}


def _model(spec: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(spec, num_classes=10).eval().requires_grad_(False)


@pytest.mark.parametrize("spec", SPECS)
def test_every_resnet20_variant_traces_to_the_same_numbers(spec):
    model = _model(spec)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in (5, 5, 3, 8):  # the first call traces; later ones, of other sizes, use the trace
            x = torch.randn(batch, 3, 32, 32, generator=generator)
            assert torch.equal(traced.forward(model, x), model(x))
    if spec in RUN_EAGERLY:
        assert traced.cached_trace(model) == "eager"
    else:
        assert isinstance(traced.cached_trace(model), torch.jit.ScriptModule)


def test_scores_are_identical_with_the_trace_and_eagerly():
    model = _model("resnet20-lgam")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    handle = model.layer1.register_forward_hook(lambda module, args, output: None)  # a hook: eager
    try:
        eager = deletion_insertion(model, x, maps, [1, 7], steps=8)
        assert traced.cached_trace(model) is None
    finally:
        handle.remove()
    through_trace = deletion_insertion(model, x, maps, [1, 7], steps=8)
    assert isinstance(traced.cached_trace(model), torch.jit.ScriptModule)
    np.testing.assert_array_equal(through_trace.deletion_curve, eager.deletion_curve)
    np.testing.assert_array_equal(through_trace.insertion_curve, eager.insertion_curve)


def test_a_hook_added_after_tracing_is_honoured():
    model = _model("resnet20-se")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = traced.forward(model, x)  # traced now
        handle = model.layer3.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
        try:
            hooked = traced.forward(model, x)
        finally:
            handle.remove()
        assert not torch.equal(hooked, plain)  # the hook ran: the trace was not used
        assert torch.equal(traced.forward(model, x), plain)


def test_gradients_and_training_mode_run_eagerly():
    model = _model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    out = traced.forward(model, x)  # grad enabled: nothing traced
    assert traced.cached_trace(model) is None and not out.requires_grad
    model.train()
    with torch.no_grad():
        traced.forward(model, x)
    assert traced.cached_trace(model) is None


class _Branchy(nn.Module):
    """Python control flow on the data: a trace would freeze the branch of its first batch."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return x * self.scale if float(x.sum()) > 0 else x - self.scale


class _Numpy(nn.Module):
    """A forward that leaves torch for numpy: nothing a trace can record."""

    def forward(self, x):
        return torch.from_numpy(x.numpy() + 1)


@pytest.mark.parametrize("module", [_Branchy, _Numpy])
def test_a_forward_a_trace_would_get_wrong_runs_eagerly_for_good(module):
    model = module().eval()
    positive, negative = torch.ones(2, 3), -torch.ones(2, 3)
    with torch.no_grad():
        expected = [model(positive), model(negative)]
        # the first batch takes one branch: a trace would pass the equality check on it
        assert torch.equal(traced.forward(model, positive), expected[0])
        assert traced.cached_trace(model) == "eager"
        assert torch.equal(traced.forward(model, negative), expected[1])


def test_the_cache_does_not_keep_a_model_alive():
    model = _model("resnet20")
    with torch.no_grad():
        traced.forward(model, torch.randn(2, 3, 32, 32))
    assert isinstance(traced.cached_trace(model), torch.jit.ScriptModule)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
