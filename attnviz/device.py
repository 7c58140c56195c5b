"""Device choice: CUDA when present, then Apple MPS, else CPU. An explicit choice wins."""

from __future__ import annotations

import torch

from attnviz.errors import AttnvizError


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    ``preference`` may be ``None``/``"auto"`` (best available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or
    ``"mps"``. Asking for a device that is not available is an error, not a silent fallback.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError) as err:
        raise AttnvizError(f"'{preference}' is not a device name (use auto, cpu, cuda or mps).") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttnvizError("CUDA was requested but no CUDA GPU is available on this machine.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AttnvizError(f"CUDA device {device.index} does not exist (found {torch.cuda.device_count()}).")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise AttnvizError("MPS was requested but is not available on this machine.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise AttnvizError(f"Device type '{device.type}' is not supported (use cpu, cuda or mps).")
    return device


def describe_device(device: torch.device) -> str:
    """A short human description, e.g. 'CPU (2 threads)' or 'CUDA: NVIDIA H100'."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"



def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
