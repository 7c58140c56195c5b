"""attnviz: see what CNN attention modules do.

The public API is re-exported lazily so that ``import attnviz`` stays fast (the app's first paint
and the CLI's ``--help`` do not pay for torch submodules they never use).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "attnviz.models.registry",
    "list_models": "attnviz.models.registry",
    "parse_spec": "attnviz.models.registry",
    "load_checkpoint": "attnviz.checkpoints",
    "save_checkpoint": "attnviz.checkpoints",
    "list_checkpoints": "attnviz.checkpoints",
    "probe": "attnviz.analysis.probes",
    "explain": "attnviz.analysis.explanations",
    "load_image": "attnviz.images",
    "train": "attnviz.training",
    "pick_device": "attnviz.device",
    "AttnvizError": "attnviz.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'attnviz' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
