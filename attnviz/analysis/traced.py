"""No-grad forward passes that run without Python's interpreter lock: a model's traced graph, for scoring.

Why (issue 15): an eager forward pass returns to Python after every operator and must take the
interpreter lock back each time. In a server, other threads run Python meanwhile (the event loop, other
sessions drawing their pages), and each re-take can wait for a whole switch interval (5 ms by default), so
a ResNet-20 pass of ~70 operators can take seconds instead of a tenth of one: the convoy effect.
``benchmarks/scoring_forward.py`` measures it with one busy Python thread beside the scoring. A
TorchScript trace runs the whole graph in C++ with the lock released, so it is immune.

When a trace is used (:func:`forward`): only for no-grad passes of a model in eval mode with no hook
anywhere (a probe, an intervention or Grad-CAM needs the Python modules and runs eagerly), and only when
tracing saw no Python control flow on the data and the trace gave exactly (``torch.equal``) the eager
output on its first batch; a model whose trace fails, branches on its data or differs runs eagerly from
then on. The traced graph shares the model's parameters and buffers, so
weights loaded into the model later are seen; the cache holds models weakly, so an evicted model goes.
Deletion/insertion scores are therefore the same numbers with or without the trace (tests check it).

TorchScript is deprecated upstream in favour of ``torch.compile``/``torch.export``, whose CPU code is
still called from Python operator by operator; if ``torch.jit.trace`` goes away, every model simply runs
eagerly. Its deprecation warning is silenced (that message only).
"""

from __future__ import annotations

import threading
import warnings
import weakref

import torch
from torch import nn
from torch.nn.modules import module as _module_globals

warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)

_UNTRACEABLE = object()  # the model's trace failed or differed: run it eagerly
_traces: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_traces_lock = threading.Lock()
_tracing_lock = threading.Lock()


def has_hooks(model: nn.Module) -> bool:
    """Whether any forward hook (global, or on any submodule) would run in ``model``'s forward pass."""
    if _module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def traceable(model: nn.Module) -> bool:
    """Whether :func:`forward` may use a trace for ``model`` now (no grad, eval mode, no hooks)."""
    return not torch.is_grad_enabled() and not model.training and not has_hooks(model)


def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``model(batch)``, through the model's traced graph when :func:`traceable` (see the module docstring).

    Call it under ``torch.no_grad()`` with the model borrowed (``attnviz.locks.borrowed``): the model's lock
    keeps hooks from being added while the graph is traced.
    """
    if not traceable(model):
        return model(batch)
    with _traces_lock:
        traced = _traces.get(model)
    if traced is _UNTRACEABLE:
        return model(batch)
    if traced is not None:
        return traced(batch)
    eager = model(batch)
    traced = _trace_checked(model, batch, eager)
    with _traces_lock:
        _traces[model] = _UNTRACEABLE if traced is None else traced
    return eager


def _trace_checked(model: nn.Module, batch: torch.Tensor, eager: torch.Tensor):
    """The model's trace when tracing raised no ``TracerWarning`` and the trace reproduces ``eager`` exactly
    on ``batch``, else None.

    A TracerWarning means the forward turned a tensor into a Python value (``float(x.sum())``, ``.item()``,
    numpy): Python control flow on the data, which a trace freezes to the branch of its first batch, so
    the equality check alone could pass and later batches would be wrong.
    """
    try:
        # one trace at a time: catch_warnings swaps the process-wide warning filters
        with _tracing_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, batch, check_trace=False)
        if any(issubclass(w.category, torch.jit.TracerWarning) for w in caught):
            return None
        # twice: TorchScript's executor profiles the first run and optimises the graph after it
        same = all(torch.equal(traced(batch), eager) for _ in range(2))
    except Exception:  # noqa: BLE001 - any model TorchScript cannot trace simply runs eagerly
        return None
    return traced if same else None


def cached_trace(model: nn.Module):
    """The trace :func:`forward` uses for ``model``: a traced module, ``"eager"`` after a failed or differing
    trace, or None before its first traceable call (for tests and diagnostics)."""
    with _traces_lock:
        traced = _traces.get(model)
    return "eager" if traced is _UNTRACEABLE else traced
