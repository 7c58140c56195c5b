"""Zoo lanes: two single-thread trainings at once vs one training using every core, in one run.

    python benchmarks/zoo_lanes.py [--spec resnet20] [--batch-size 128] [--steps 30]

``scripts/train_zoo.py --lanes N`` trains N models at once, each pinned to one core with one thread.
This measures why: the images per second of one bare training step loop using all cores (the
trainer's default: ``torch.set_num_threads`` = the cores) against the summed images per second of one
such loop per core, each pinned to its core, all running at the same time. Same model, batch, data
(random tensors: the data path is not what is compared), in the precision and memory format the
trainer's ``auto`` picks for that model on this CPU (bf16 autocast where the CPU has native bf16
kernels, float32 otherwise). Prints the ratio lanes / one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def step_loop(spec: str, batch_size: int, steps: int) -> float:
    """Images per second of ``steps`` training steps (median step time, after 3 warm-ups)."""
    import torch
    import torch.nn.functional as F

    from attnviz.models.registry import create_model
    from attnviz.training import Recipe, resolve_precision

    torch.manual_seed(0)
    model = create_model(spec, num_classes=10)
    dtype, channels_last = resolve_precision(Recipe(), torch.device("cpu"), model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,))
    times = []
    for i in range(steps + 3):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - started)
    return batch_size / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one lane (internal)
    args = parser.parse_args()
    if args.worker is not None:
        import torch

        os.sched_setaffinity(0, {args.worker})
        torch.set_num_threads(1)
        print(step_loop(args.spec, args.batch_size, args.steps))
        return 0
    cores = sorted(os.sched_getaffinity(0))
    import torch

    torch.set_num_threads(len(cores))
    one = step_loop(args.spec, args.batch_size, args.steps)
    lanes = [subprocess.Popen([sys.executable, __file__, "--spec", args.spec, "--batch-size", str(args.batch_size),
                               "--steps", str(args.steps), "--worker", str(core)], stdout=subprocess.PIPE, text=True)
             for core in cores]
    speeds = [float(proc.communicate()[0].strip().splitlines()[-1]) for proc in lanes]
    total = sum(speeds)
    from attnviz.models.registry import create_model
    from attnviz.training import Recipe, precision_label, resolve_precision

    chosen = precision_label(*resolve_precision(Recipe(), torch.device("cpu"), create_model(args.spec, num_classes=10)))
    print(f"{args.spec}, batch {args.batch_size}, {len(cores)} cores, {chosen}, torch {torch.__version__}")
    print(f"one training, {len(cores)} threads : {one:8.1f} img/s")
    print(f"{len(cores)} lanes, 1 thread each   : {total:8.1f} img/s ({', '.join(f'{s:.1f}' for s in speeds)})")
    print(f"ratio lanes / one = {total / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
