"""GradCAM latency on every ResNet-20 variant, as ratios measured in this one run (issue 3).

Targets: (1) one 32x32 image, GradCAM on every ResNet-20 variant: at most 150 ms in all and at most
4.5x each model's own no-grad forward of the same image; (2) a batch of 8 images in one call costs at
most 0.35x eight single calls. Models are warm (one untimed call each) and in eval mode with
``requires_grad_(False)``, as the app's shared models are. Timing does not depend on the weights, so
untrained models are used. Milliseconds are the best of ``--repeats`` runs; ratios are the median
of paired ratios (each explain timing over the forward timed right before it), so load from other
processes on a shared machine affects numerator and denominator alike.

    .venv/bin/python benchmarks/explain_latency.py [--threads 2] [--repeats 15] [--branches] [--clock wall|cpu]

``--branches`` also times the Interflow per-branch maps (off by default: the app's first map is the
model's own; branch maps are one more CAM per stage).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnviz.analysis.explanations import explain
from attnviz.models.registry import create_model, list_models

CLOCK = time.perf_counter


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append((CLOCK() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--branches", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (use with --threads 1 on a "
                             "machine shared with other jobs, where elapsed time mostly measures their load)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = [s for s in list_models() if s.split("-")[0] == "resnet20"]
    one = torch.randn(1, 3, 32, 32)
    eight = torch.randn(8, 3, 32, 32)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, {args.repeats} repeats, "
          f"branches={'on' if args.branches else 'off'}")
    print(f"{'model':34s} {'forward ms':>10s} {'gradcam ms':>10s} {'ratio':>6s} {'8 singles ms':>12s} "
          f"{'batch-8 ms':>10s} {'ratio':>6s}")
    total_ms, worst_single, worst_batch = 0.0, 0.0, 0.0
    for spec in specs:
        model = create_model(spec).eval().requires_grad_(False)

        def forward(model=model):
            with torch.no_grad():
                model(one)

        def single(model=model):
            explain(model, one, method="gradcam", branches=args.branches)

        def singles(model=model):
            for i in range(8):
                explain(model, eight[i:i + 1], method="gradcam", branches=args.branches)

        def batched(model=model):
            explain(model, eight, method="gradcam", branches=args.branches)

        for fn in (forward, single, singles, batched):  # warm-up
            fn()
        # Paired measurements: each explain timing is divided by the forward (or 8 singles) timed just
        # before it, so a burst of load from other processes hits numerator and denominator alike.
        forward_times, single_times, single_ratios = [], [], []
        for _ in range(args.repeats):
            fwd_ms, cam_ms = median_ms(forward, 3), median_ms(single, 1)
            forward_times.append(fwd_ms)
            single_times.append(cam_ms)
            single_ratios.append(cam_ms / fwd_ms)
        batch_ratios, singles_times, batched_times = [], [], []
        for _ in range(max(3, args.repeats // 3)):
            eight_ms, batch_ms = median_ms(singles, 1), median_ms(batched, 1)
            singles_times.append(eight_ms)
            batched_times.append(batch_ms)
            batch_ratios.append(batch_ms / eight_ms)
        fwd, cam = min(forward_times), min(single_times)
        eight_single, batch = min(singles_times), min(batched_times)
        single_ratio, batch_ratio = statistics.median(single_ratios), statistics.median(batch_ratios)
        total_ms += cam
        worst_single = max(worst_single, single_ratio)
        worst_batch = max(worst_batch, batch_ratio)
        print(f"{spec:34s} {fwd:10.2f} {cam:10.2f} {single_ratio:6.2f} {eight_single:12.2f} {batch:10.2f} "
              f"{batch_ratio:6.2f}")
    print(f"\none image, GradCAM on all {len(specs)} ResNet-20 variants: {total_ms:.1f} ms in all (target <= 150)")
    print(f"worst per-model ratio to its own no-grad forward: {worst_single:.2f}x (target <= 4.5x)")
    print(f"worst batch-of-8 / eight single calls: {worst_batch:.2f}x (target <= 0.35x)")


if __name__ == "__main__":
    main()
