"""The public API: names in ``attnviz.__all__`` keep their meaning whatever was imported before, and
the calls that back-propagate work inside a caller's no-grad / inference block."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
import torch

import attnviz

EXPECTED_KIND = {
    "create_model": "function", "list_models": "function", "parse_spec": "function",
    "load_checkpoint": "function", "save_checkpoint": "function", "list_checkpoints": "function",
    "probe": "function", "explain": "function", "load_image": "function", "train": "function",
    "pick_device": "function", "AttnvizError": "class",
}


def test_public_names_survive_importing_every_submodule():
    for info in pkgutil.walk_packages(attnviz.__path__, "attnviz."):
        if info.name.startswith("attnviz.cli.") or info.name == "attnviz.__main__":
            continue  # the CLI modules are entry points, imported by attnviz.cli itself
        importlib.import_module(info.name)
    importlib.import_module("attnviz.cli")
    assert set(EXPECTED_KIND) | {"__version__"} == set(attnviz.__all__)
    for name, kind in EXPECTED_KIND.items():
        value = getattr(attnviz, name)
        assert not isinstance(value, type(attnviz)), f"attnviz.{name} is a module, not the public {kind}"
        assert (isinstance(value, type) if kind == "class" else callable(value)), name


def _model():
    torch.manual_seed(0)
    return attnviz.create_model("resnet20-cbam", num_classes=10).eval()


@pytest.mark.parametrize("context", ["no_grad", "grad_disabled", "inference_mode"])
@pytest.mark.parametrize("method", __import__("attnviz.analysis.explanations", fromlist=["METHODS"]).METHODS)
def test_explain_works_inside_a_callers_no_grad_and_restores_it(method, context):
    model = _model()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blocks = {"no_grad": torch.no_grad, "grad_disabled": lambda: torch.set_grad_enabled(False),
              "inference_mode": torch.inference_mode}
    with blocks[context]():
        result = attnviz.explain(model, x, method=method, target=3)
        assert not torch.is_grad_enabled()  # the caller's state is back
    assert torch.is_grad_enabled()
    assert len(result) == 1 and result[0].target == 3
    assert np.isfinite(result[0].heatmap).all() and result[0].heatmap.max() > 0


def test_faithfulness_metrics_work_inside_no_grad():
    from attnviz.analysis.faithfulness import deletion_insertion

    model = _model()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    heat = np.random.default_rng(0).random((2, 32, 32))
    with torch.no_grad():
        inside = deletion_insertion(model, x, heat, [1, 2], steps=4)
    outside = deletion_insertion(model, x, heat, [1, 2], steps=4)
    assert np.allclose(inside.deletion_auc, outside.deletion_auc) and np.allclose(inside.insertion_auc, outside.insertion_auc)
