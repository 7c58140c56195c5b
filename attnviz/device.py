"""Device choice: CUDA when present, then Apple MPS, else CPU. An explicit choice wins. And how many
CPU threads a serving process gives each computation (:func:`serving_threads`), and how it keeps its
long-lived heap out of the garbage collector's way (:func:`settle_heap`)."""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Mapping

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
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"



def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


SERVING_THREADS_ENV = "ATTNVIZ_THREADS"
DEFAULT_SERVING_THREADS = 1


def serving_threads(environ: Mapping[str, str] | None = None) -> int:
    """Torch intra-op threads for the app server: ``$ATTNVIZ_THREADS``, default 1.

    Why 1: a server runs each session's script on its own Python thread, and every thread that calls a
    parallel torch kernel starts its own OpenMP team of ``torch.get_num_threads()`` threads, so
    concurrent sessions oversubscribe the cores, and one busy core (another session, the browser on a
    laptop-as-server) stalls every team at its barriers. With one thread each, sessions compute side by
    side. Measured with ``benchmarks/app_load.py`` on 2 cores (browsers on the same machine): 1 thread
    beat 2 for one session and for 4 concurrent ones; alone on a quiet machine 2 threads are faster
    for one user, so a single-user install may raise it.
    """
    raw = (os.environ if environ is None else environ).get(SERVING_THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_SERVING_THREADS
    if not raw.isdigit() or not 1 <= int(raw) <= 1024:
        raise AttnvizError(f"{SERVING_THREADS_ENV} must be a whole number of threads from 1 to 1024, not '{raw}'.")
    return int(raw)


def configure_serving_threads(environ: Mapping[str, str] | None = None) -> int:
    """Set torch's intra-op threads to :func:`serving_threads` (process-wide); returns the number."""
    threads = serving_threads(environ)
    torch.set_num_threads(threads)
    return threads


def settle_heap() -> int:
    """Collect once, then freeze everything alive (`gc.freeze`); returns how many objects are frozen.

    Why: a serving process holds ~250,000 long-lived objects (torch, the libraries, the loaded models), and
    Streamlit runs a full ``gc.collect(2)`` after every script run to keep memory flat. Each such collection
    walks all of them while holding the interpreter lock (~0.15 s on a 2-core machine), stalling every other
    session's computation (issue 15). Frozen objects are skipped by every later collection, so those only
    see what sessions made since. Frozen objects are still freed by reference counting (an evicted model
    goes); only reference cycles among them would stay, so call this after loading long-lived things only.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


TRIM_INTERVAL_ENV = "ATTNVIZ_TRIM_SECONDS"
DEFAULT_TRIM_INTERVAL_S = 30.0


def return_free_heap() -> bool:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim(0)``); returns
    False where there is no glibc (macOS, musl), which keeps its own policy.

    Why: a server's sessions allocate on many threads (Streamlit starts a thread per script run), so glibc
    spreads their memory over many arenas and keeps what they free for reuse. After a burst of sessions
    ends (their uploads, drawn images and media dropped), the process's resident memory stays at the
    burst's peak although Python freed everything: it looks like a leak on a long-running classroom server.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)  # ctypes releases the interpreter lock for the call: other sessions keep running
    return True


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` from the symbols already loaded in this process (no library search, which
    would start a subprocess), or None."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no process-wide symbol table
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_interval(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between :func:`return_free_heap` calls of a server: ``$ATTNVIZ_TRIM_SECONDS``, default 30;
    0 turns it off."""
    raw = (os.environ if environ is None else environ).get(TRIM_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_TRIM_INTERVAL_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise AttnvizError(f"{TRIM_INTERVAL_ENV} must be a number of seconds from 0 (off) to 86400, not '{raw}'.")
    return seconds


def start_heap_trimmer(interval_s: float):
    """A daemon thread that calls :func:`return_free_heap` every ``interval_s`` seconds for the life of
    the process (a server's); returns it, or None when ``interval_s`` is 0 or there is no glibc."""
    import threading

    if interval_s <= 0 or not return_free_heap():
        return None

    def trim_forever() -> None:
        while True:
            time.sleep(interval_s)
            return_free_heap()

    thread = threading.Thread(target=trim_forever, name="attnviz-heap-trimmer", daemon=True)
    thread.start()
    return thread
