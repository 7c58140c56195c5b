"""The garbage collection after every app rerun, before and after the serving heap is frozen (issue 15).

    python benchmarks/heap_freeze.py [--repeats 5]

Streamlit runs a full ``gc.collect()`` after every script run (``runner.postScriptGC``, which keeps the
server's memory flat). This process builds what an app process holds after its first Inspect upload
(Streamlit, torch, the explanation libraries, pandas, pyarrow, Plotly, the three default ResNet-20s,
one inspection each), then times a full collection: as it is, and after ``attnviz.device.settle_heap``
(what the app does after each model load). Prints the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed_collections(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    import numpy as np
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import pyarrow  # noqa: F401
    import streamlit  # noqa: F401
    import torch
    from PIL import Image

    from attnviz.analysis.explanations import load_backends
    from attnviz.analysis.inspection import inspect_picture
    from attnviz.device import settle_heap
    from attnviz.models.registry import create_model

    load_backends()
    torch.manual_seed(0)
    card = {"input_size": [32, 32], "in_chans": 3, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    models = [create_model(spec).eval().requires_grad_(False) for spec in ("resnet20-se", "resnet20-se-felu",
                                                                             "resnet20-lgam")]
    for model in models:  # the lazy imports and caches of a first upload
        inspect_picture(model, card, picture, scores=True)
    tracked = len(gc.get_objects())
    before = timed_collections(args.repeats)
    frozen = settle_heap()
    after = timed_collections(args.repeats)
    print(f"full collection with {tracked:,} tracked objects: {1000 * before:.1f} ms; after freezing {frozen:,} "
          f"of them: {1e6 * after:.1f} µs (median of {args.repeats})")


if __name__ == "__main__":
    main()
