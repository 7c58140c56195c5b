"""Model work in a threaded server: on each request's own thread vs on one compute thread (issue 15).

    python benchmarks/compute_thread.py [--callers 4] [--repeats 5]

What one Inspect upload computes (``attnviz.analysis.inspection.inspect_picture`` with deletion /
insertion scores, one picture, the three default ResNet-20s) is timed in one process, as the app runs
it: each request on a fresh thread (Streamlit starts one per rerun), with one other long-lived thread
that has used torch (in the app: any other session, or the compute thread itself); the main thread
never runs a kernel (the models are loaded on the compute thread, as in the app):

1. ``own thread``: the request thread calls the library itself (what the app did before);
2. ``compute thread``: the request thread hands the call to one long-lived worker thread (a
   one-worker ``ThreadPoolExecutor``) that runs every call, first come first served;
3. and the same two with ``--callers`` requests arriving at once (a classroom): median and slowest.

Also the bare cost of an element-wise op on a fresh thread alone and beside another OpenMP thread,
the effect behind it (GNU libgomp). Prints the ratios; the results of both ways are checked equal.

Why the app does not use a compute thread although it wins here (issue 15, measured with
``benchmarks/app_load.py --sessions 4 --cycles 8 --memory-cycles 0`` on a quiet machine): with every
torch call of the app routed to one such thread, the server-side median of an Inspect rerun under 4
sessions was 9.6 s against 3.0 s with each rerun computing on its own thread. In the server, the
compute thread shares the interpreter lock with the script threads (protobuf, figures, PNGs) and the
event loop, and a thread issuing many small kernels, each releasing and retaking the lock, queues
behind them; this process has no such competing Python work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from attnviz.analysis.inspection import inspect_picture  # noqa: E402
from attnviz.checkpoints import load_checkpoint  # noqa: E402
from attnviz.paths import SAMPLE_DIR, SHIPPED_DIR  # noqa: E402

MODELS = ("resnet20-se", "resnet20-se-felu", "resnet20-lgam")

_compute_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")


def run_on_compute_thread(function, *args):
    """Run ``function(*args)`` on the one compute thread and wait for it."""
    return _compute_thread.submit(function, *args).result()


def on_fresh_thread(function):
    """Run ``function`` on a new thread (as Streamlit runs a rerun) and return (result, seconds)."""
    out = {}

    def body():
        started = time.perf_counter()
        out["result"] = function()
        out["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out["result"], out["seconds"]


def elementwise_us() -> float:
    x = torch.randn(33, 16, 32, 32)
    for _ in range(5):
        x + x
    started = time.perf_counter()
    for _ in range(300):
        x + x
    return 1e6 * (time.perf_counter() - started) / 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    alone = on_fresh_thread(elementwise_us)[0]
    # loaded on the compute thread, as the app does: this process's main thread never runs a torch kernel
    models = run_on_compute_thread(lambda: [load_checkpoint(SHIPPED_DIR / f"{name}.json") for name in MODELS])
    pictures = sorted((SAMPLE_DIR / "train").glob("*/*.jpg"))
    images = [Image.open(p).convert("RGB") for p in pictures[: max(args.repeats, args.callers) + 1]]

    def upload(image, via_compute_thread: bool):
        def work():
            return [inspect_picture(model, card, image, scores=True, name=name)
                    for name, (model, card) in zip(MODELS, models, strict=True)]
        return run_on_compute_thread(work) if via_compute_thread else work()

    run_on_compute_thread(lambda: upload(images[0], False))  # the compute thread now owns an OpenMP team
    beside = on_fresh_thread(elementwise_us)[0]
    print(f"element-wise op on a fresh thread: {alone:.0f} us alone, {beside:.0f} us beside another OpenMP "
          f"thread ({beside / alone:.1f}x)")
    on_fresh_thread(lambda: upload(images[0], False))  # warm-up of both ways

    single = {}
    for way, via in (("own thread", False), ("compute thread", True)):
        seconds, results = [], []
        for image in images[1:args.repeats + 1]:
            result, took = on_fresh_thread(lambda image=image, via=via: upload(image, via))
            seconds.append(took)
            results.append(result)
        single[way] = (statistics.median(seconds), results)
    for a, b in zip(single["own thread"][1], single["compute thread"][1], strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x.probs, y.probs) and all(
                np.array_equal(m.heatmap, n.heatmap) for m, n in zip(x.maps, y.maps, strict=True)) and all(
                s.deletion == t.deletion and s.insertion == t.insertion for s, t in zip(x.scores, y.scores, strict=True))
    print(f"one upload (1 picture x {len(MODELS)} ResNet-20s, scored), median of {args.repeats}:")
    base = single["own thread"][0]
    for way, (median, _) in single.items():
        print(f"  {way:15s} {1000 * median:7.0f} ms  ({base / median:.2f}x the own-thread speed)")
    print("  results identical: yes")

    print(f"{args.callers} uploads arriving at once (different pictures):")
    for way, via in (("own thread", False), ("compute thread", True)):
        times = [0.0] * args.callers
        barrier = threading.Barrier(args.callers)

        def caller(i, via=via, barrier=barrier, times=times):
            barrier.wait()
            started = time.perf_counter()
            upload(images[1 + i % (len(images) - 1)], via)
            times[i] = time.perf_counter() - started

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"  {way:15s} median {1000 * statistics.median(times):7.0f} ms   slowest {1000 * max(times):7.0f} ms"
              f"   ({max(times) / single[way][0]:.2f}x its single upload)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
