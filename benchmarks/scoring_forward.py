"""Deletion/insertion scoring beside busy Python threads: eager forward passes vs traced ones (issue 15).

    python benchmarks/scoring_forward.py [--repeats 5] [--busy 0 1 2] [--specs resnet20-se resnet20-se-felu resnet20-lgam]

One Inspect upload scores one Grad-CAM map per model: 2 x 33 forward passes each. In the app server those
passes share the interpreter with threads that run Python (the event loop, other sessions drawing). An
eager pass takes the interpreter lock back after every operator and may wait a whole switch interval
(``sys.getswitchinterval()``, 5 ms) each time; ``attnviz.analysis.traced`` runs a traced graph instead,
with the lock released throughout. Here, in one process, the chosen models (untrained weights: the work
is the same) are scored side by side on a thread pool, one torch thread each, as the app does, while
``--busy`` threads run pure Python:

- ``eager``: the models carry a no-op forward hook, which makes scoring run them eagerly;
- ``traced``: the same models without it.

Prints the median upload time of each over ``--repeats`` and the ratio eager / traced per number of busy
threads; the scores of both are checked equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnviz.analysis.faithfulness import deletion_insertion  # noqa: E402
from attnviz.models.registry import create_model  # noqa: E402


def busy_python(stop: threading.Event) -> None:
    """Stands in for the server's other Python work: holds the interpreter lock whenever it can."""
    while not stop.is_set():
        sum(i * i for i in range(2000))


def score_all(pool, models, x, maps) -> list:
    futures = [pool.submit(deletion_insertion, model, x, maps, [0]) for model in models]
    return [f.result() for f in futures]


def timed(pool, models, x, maps, repeats: int) -> tuple[float, list]:
    result = score_all(pool, models, x, maps)  # warm-up (and the trace, the first time)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_all(pool, models, x, maps)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--specs", nargs="+", default=["resnet20-se", "resnet20-se-felu", "resnet20-lgam"])
    args = parser.parse_args()
    if args.repeats < 1 or min(args.busy) < 0:
        parser.error("--repeats must be >= 1 and --busy counts >= 0")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = [create_model(spec).eval().requires_grad_(False) for spec in args.specs]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    pool = ThreadPoolExecutor(max_workers=len(models))
    print(f"{len(models)} models ({', '.join(args.specs)}), 1 picture, 2 x 33 passes each, side by side; "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms; median of {args.repeats}")
    for busy in args.busy:
        stop = threading.Event()
        threads = [threading.Thread(target=busy_python, args=(stop,), daemon=True) for _ in range(busy)]
        for thread in threads:
            thread.start()
        try:
            hooks = [m.register_forward_hook(lambda module, inputs, output: None) for m in models]
            try:
                eager, eager_scores = timed(pool, models, x, maps, args.repeats)
            finally:
                for hook in hooks:
                    hook.remove()
            traced_time, traced_scores = timed(pool, models, x, maps, args.repeats)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        for a, b in zip(eager_scores, traced_scores, strict=True):
            assert np.array_equal(a.deletion_curve, b.deletion_curve)
            assert np.array_equal(a.insertion_curve, b.insertion_curve)
        print(f"  {busy} busy Python thread(s): eager {eager * 1000:7.0f} ms   traced {traced_time * 1000:6.0f} ms"
              f"   eager / traced {eager / traced_time:5.2f}x   (scores equal)")


if __name__ == "__main__":
    main()
