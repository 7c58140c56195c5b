"""One Inspect upload's model work, the models one after another vs side by side on threads (issue 15).

    python benchmarks/side_by_side.py [--repeats 5] [--specs resnet20-se resnet20-se-felu resnet20-lgam]

What one upload computes per model (``attnviz.analysis.inspection.inspect_picture`` with deletion /
insertion scores, one picture) is timed for the chosen models (untrained weights: the work is the same)
in one process, with one torch thread per computation as the app serves (``ATTNVIZ_THREADS=1``):

1. ``one after another``: ``attnviz.analysis.inspection.compare`` without an executor;
2. ``side by side``: the same call with a thread pool, one thread per model (what the app does).

Prints the median of each over ``--repeats`` and their ratio: how much of a second core one user's
upload can use on this machine. The two comparisons' probabilities are checked equal.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from attnviz.analysis.explanations import load_backends  # noqa: E402
from attnviz.analysis.inspection import compare, inspect_picture  # noqa: E402
from attnviz.models.registry import create_model  # noqa: E402

CARD = {"input_size": [32, 32], "in_chans": 3, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--specs", nargs="+", default=["resnet20-se", "resnet20-se-felu", "resnet20-lgam"])
    args = parser.parse_args()
    if args.repeats < 1 or len(args.specs) < 2:
        parser.error("--repeats must be >= 1 and --specs must name at least two models")
    torch.set_num_threads(1)
    load_backends()
    torch.manual_seed(0)
    models = {spec: create_model(spec).eval().requires_grad_(False) for spec in args.specs}
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    sources = [("picture.png", buffer.getvalue())]

    def inspect(spec, picture):
        return inspect_picture(models[spec], CARD, picture.source, scores=True, name=spec)

    times = {"one after another": [], "side by side": []}
    with ThreadPoolExecutor(len(models), thread_name_prefix="model") as pool:
        for executor in (None, pool):  # warm-up: every thread has run each kind of kernel once
            compare(list(models), sources, inspect, executor=executor)
        for _ in range(args.repeats):
            for label, executor in (("one after another", None), ("side by side", pool)):
                started = time.perf_counter()
                result = compare(list(models), sources, inspect, executor=executor)
                times[label].append(time.perf_counter() - started)
                if executor is None:
                    reference = result
                else:
                    for spec in models:
                        np.testing.assert_array_equal(result.cells[spec][0].inspection.probs,
                                                      reference.cells[spec][0].inspection.probs)
    alone, together = (statistics.median(times[label]) for label in times)
    print(f"{len(models)} models, one picture with deletion/insertion scores, 1 torch thread per model, "
          f"median of {args.repeats}:")
    print(f"  one after another {alone:.3f} s   side by side {together:.3f} s   ratio {alone / together:.2f}x")


if __name__ == "__main__":
    main()
