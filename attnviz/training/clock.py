"""The trainer's clock: time while the process is suspended is not training time.

Pause a run with SIGTSTP (Ctrl-Z in a terminal, or ``kill -TSTP PID``) and continue it with SIGCONT:
every duration the trainer records (epoch times, ``train_time_s``, images/s, ETAs) comes from
:func:`clock`, which leaves the suspended time out. A plain SIGSTOP cannot be seen by the process, so
its time counts. :func:`install_suspend_clock` is called by ``train()`` when it runs in the main thread.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_suspended_s = 0.0


def clock() -> float:
    """Seconds on a monotonic clock that stands still while the process is suspended by SIGTSTP."""
    return time.perf_counter() - _suspended_s


def _on_suspend(signum, _frame) -> None:
    """SIGTSTP: stop for real, then count how long the process stood still.

    The stop is a SIGSTOP to ourselves, not SIGTSTP's default action: the kernel discards a default
    SIGTSTP for a process in an orphaned process group (a ``nohup ... &`` job whose shell has exited,
    the zoo's lanes), so re-raising SIGTSTP would not stop the process at all.
    """
    global _suspended_s
    stopped = time.perf_counter()
    try:
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once the process is continued (SIGCONT)
    finally:
        _suspended_s += time.perf_counter() - stopped


def install_suspend_clock() -> None:
    """Route SIGTSTP through :func:`_on_suspend` (main thread only; an existing handler is kept)."""
    if (hasattr(signal, "SIGTSTP") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTSTP) in (signal.SIG_DFL, None)):
        signal.signal(signal.SIGTSTP, _on_suspend)
