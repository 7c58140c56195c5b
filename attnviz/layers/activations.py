"""FeLU (He & Sun 2020, formula (4)) and the activation family the FeLU paper compares.

``felu-se-channel-attention.md`` defines

    FeLU(x) = x                         for x > 0
    FeLU(x) = (e^x - 1) / (1 + e^-x)    for x < 0        (and 0 at x = 0, where both sides meet)

Numerical form. For x < 0 the naive quotient overflows: e^-x is inf in float16 once x < -11.1
(float32: x < -88.7) and the result becomes -1/inf -> -0 or NaN in the gradient. Multiplying
numerator and denominator by e^x gives the equivalent

    (e^x - 1) / (1 + e^-x) = (e^x - 1) * e^x / (e^x + 1) = expm1(x) * sigmoid(x)

which only evaluates e^x for x <= 0 (never overflows) and uses ``expm1`` for accuracy near 0. We
compute in at least float32 and cast back, so float16/bfloat16 inputs get a correctly rounded value.
The derivative for x < 0 is  e^x * sigmoid(x) + expm1(x) * sigmoid(x) * (1 - sigmoid(x)),
and 1 for x > 0; at x = 0 both one-sided derivatives are 0.5 + 0 = 0.5 (left) and 1 (right); we use
the right-hand value 1 at exactly 0 (the same convention as ReLU's subgradient choice 0 at 0 is
irrelevant for training). FeLU's minimum: with t = e^x, FeLU = (t^2 - t)/(t + 1), whose derivative
vanishes at t = sqrt(2) - 1, i.e. x = ln(sqrt(2) - 1) ~ -0.881 with value -(3 - 2 sqrt(2)) ~ -0.172:
the "slightly below zero" output the paper describes (``felu_minimum`` finds it numerically).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.errors import SpecError


def felu(x: torch.Tensor) -> torch.Tensor:
    """FeLU(x): ``x`` for x > 0, ``expm1(x) * sigmoid(x)`` (= (e^x-1)/(1+e^-x)) for x <= 0."""
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    xc = x.to(compute_dtype)
    # clamp so the unused branch of torch.where never produces inf/NaN (which would poison grads)
    neg = xc.clamp(max=0.0)
    negative_part = torch.expm1(neg) * torch.sigmoid(neg)
    out = torch.where(xc > 0, xc, negative_part)
    return out.to(x.dtype)


class FeLU(nn.Module):
    """FeLU activation as a module (out-of-place, so backward hooks work)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return felu(x)


def felu_minimum() -> tuple[float, float]:
    """(x, FeLU(x)) at FeLU's minimum, found by golden-section search in float64 on [-5, 0]."""
    lo, hi = -5.0, 0.0
    ratio = (5**0.5 - 1) / 2

    def f(v: float) -> float:
        return float(felu(torch.tensor(v, dtype=torch.float64)))

    for _ in range(200):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if f(a) < f(b):
            hi = b
        else:
            lo = a
    x_min = (lo + hi) / 2
    return x_min, f(x_min)


@dataclass(frozen=True)
class ActivationInfo:
    """One entry of the activation registry."""

    name: str
    label: str
    factory: Callable[[], nn.Module]
    latex: str
    in_felu_paper: bool  # compared in tables 1-2 of the FeLU paper


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.01)


ACTIVATIONS: dict[str, ActivationInfo] = {
    info.name: info
    for info in [
        ActivationInfo("relu", "ReLU", nn.ReLU, r"\max(0, x)", True),
        ActivationInfo("leaky_relu", "LeakyReLU (0.01)", _leaky, r"\max(0.01x, x)", True),
        ActivationInfo("softplus", "Softplus", nn.Softplus, r"\ln(1 + e^{x})", True),
        ActivationInfo("sigmoid", "Sigmoid", nn.Sigmoid, r"\frac{1}{1 + e^{-x}}", True),
        ActivationInfo("softsign", "SoftSign", nn.Softsign, r"\frac{x}{1 + |x|}", True),
        ActivationInfo(
            "felu",
            "FeLU",
            FeLU,
            r"\begin{cases} x & x > 0 \\ \frac{e^{x} - 1}{1 + e^{-x}} & x \le 0 \end{cases}",
            True,
        ),
        ActivationInfo("elu", "ELU", nn.ELU, r"\begin{cases} x & x > 0 \\ e^{x} - 1 & x \le 0 \end{cases}", False),
        ActivationInfo("gelu", "GELU", nn.GELU, r"x \, \Phi(x)", False),
        ActivationInfo("silu", "SiLU (Swish)", nn.SiLU, r"\frac{x}{1 + e^{-x}}", False),
    ]
}


def list_activations() -> list[str]:
    return list(ACTIVATIONS)


def get_activation(name: str) -> nn.Module:
    """A fresh, out-of-place activation module by registry name (``relu``, ``felu``, ...)."""
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise SpecError(f"Unknown activation '{name}'; known: {', '.join(ACTIVATIONS)}.")
    module = ACTIVATIONS[key].factory()
    if hasattr(module, "inplace"):
        module.inplace = False
    return module


def sample_activation(name: str, lo: float = -5.0, hi: float = 5.0, n: int = 501):
    """Sample an activation and its derivative on ``[lo, hi]`` (float64, autograd).

    Returns ``(x, y, dy)`` as numpy arrays of length ``n``; the app draws these curves.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise SpecError("The range must be two finite numbers with lo < hi.")
    if not 2 <= int(n) <= 100_000:
        raise SpecError("The number of samples must be between 2 and 100000.")
    module = get_activation(name)
    x = torch.linspace(float(lo), float(hi), int(n), dtype=torch.float64, requires_grad=True)
    y = module(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    return x.detach().numpy(), y.detach().numpy(), dy.numpy()


# F is re-exported for callers that want functional forms of the classic activations
__all__ = ["felu", "FeLU", "felu_minimum", "ACTIVATIONS", "ActivationInfo", "get_activation",
           "list_activations", "sample_activation", "F"]
