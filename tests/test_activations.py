import math

import numpy as np
import pytest
import torch

from attnviz.errors import SpecError
from attnviz.layers.activations import (
    ACTIVATIONS,
    FeLU,
    felu,
    felu_minimum,
    get_activation,
    sample_activation,
)


def felu_reference(x: float) -> float:
    """Formula (4) of the FeLU paper, literally, in Python floats (only for moderate x)."""
    if x > 0:
        return x
    if x == 0:
        return 0.0
    return (math.exp(x) - 1) / (1 + math.exp(-x))


@pytest.mark.parametrize("x", [-30.0, -10.0, -3.0, -1.0, -0.881, -0.1, -1e-6, 0.0, 1e-6, 0.5, 2.0, 100.0])
def test_felu_matches_formula_in_float64(x):
    got = felu(torch.tensor(x, dtype=torch.float64)).item()
    assert got == pytest.approx(felu_reference(x), rel=1e-9, abs=1e-300)


def test_felu_module_and_function_agree():
    x = torch.randn(100)
    assert torch.equal(FeLU()(x), felu(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_felu_finite_for_every_finite_input(dtype):
    info = torch.finfo(dtype)
    x = torch.tensor([info.min, -1e4 if dtype != torch.float16 else -6e4, -100.0, -11.5, -1.0, -info.tiny,
                      0.0, info.tiny, 1.0, info.max], dtype=dtype)
    y = felu(x)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(felu(x).float().sum(), x)
    assert torch.isfinite(grad).all()
    # the negative branch stays within [min, 0]
    _, min_value = felu_minimum()
    assert (y[:6].float() >= min_value - 1e-2).all() and (y[:6].float() <= 0).all()


def test_felu_gradcheck_float64():
    x = torch.cat([torch.linspace(-20, -0.01, 50), torch.linspace(0.01, 5, 20)]).double().requires_grad_(True)
    assert torch.autograd.gradcheck(felu, (x,))


def test_felu_minimum_is_analytic():
    x_min, y_min = felu_minimum()
    assert x_min == pytest.approx(math.log(math.sqrt(2) - 1), abs=1e-6)
    assert y_min == pytest.approx(-(3 - 2 * math.sqrt(2)), abs=1e-9)


def test_registry_has_paper_activations_and_extras():
    for name in ["relu", "leaky_relu", "softplus", "sigmoid", "softsign", "felu", "elu", "gelu", "silu"]:
        assert name in ACTIVATIONS
        module = get_activation(name)
        assert not getattr(module, "inplace", False)
    with pytest.raises(SpecError):
        get_activation("swishy")


def test_sample_activation_values_and_derivatives():
    x, y, dy = sample_activation("felu", -4, 4, 801)
    assert x.shape == y.shape == dy.shape == (801,)
    assert np.allclose(y[x > 0], x[x > 0])
    assert np.allclose(dy[x > 0.01], 1.0)
    numeric = np.gradient(y, x)
    assert np.allclose(dy[5:395], numeric[5:395], atol=1e-3)
    _, relu_y, relu_dy = sample_activation("relu", -1, 1, 5)
    assert relu_y.tolist() == [0, 0, 0, 0.5, 1]
    with pytest.raises(SpecError):
        sample_activation("felu", 3, -3)
