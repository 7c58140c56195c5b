"""Training and inference throughput of every ResNet-20 variant relative to the plain ResNet-20.

All variants are measured in one process, interleaved round by round (so drift in machine load hits
every variant alike), and each ratio is median(plain time) / median(variant time). Printed beside the
ECA paper's ResNet-50 ratios (SE 0.74x train / 0.87x inference, CBAM 0.46x / 0.65x, ECA 0.77x / 0.97x):
the target is that ours are no worse. LGAM and Interflow have no published figure; ours is the reference.

    .venv/bin/python benchmarks/attention_overhead.py [--rounds 5] [--batch 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnviz.device import describe_device, pick_device
from attnviz.models.registry import create_model
from attnviz.paper_tables import ECA_RESNET50_SPEED_RATIO

VARIANTS = ["resnet20", "resnet20-se", "resnet20-se-felu", "resnet20-lgam", "resnet20-cbam", "resnet20-bam",
            "resnet20-sge", "resnet20-eca", "resnet20-interflow-soft", "resnet20-interflow-per_class"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train(model, x, y, steps, device):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    _sync(device)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def time_infer(model, x, steps, device):
    model.eval()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        model(x)
    _sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if device.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
    models = {}
    for spec in VARIANTS:
        model = create_model(spec).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        time_train(model, x, y, 1, device)  # warm-up
        time_infer(model, x, 1, device)
        models[spec] = model
    train_times = {s: [] for s in VARIANTS}
    infer_times = {s: [] for s in VARIANTS}
    for _ in range(args.rounds):
        for spec, model in models.items():
            train_times[spec].append(time_train(model, x, y, args.steps, device))
            infer_times[spec].append(time_infer(model, x, args.steps, device))
    base_train = statistics.median(train_times["resnet20"])
    base_infer = statistics.median(infer_times["resnet20"])
    print(f"device: {describe_device(device)}; batch {args.batch}; {args.rounds} rounds x {args.steps} steps")
    print(f"{'variant':<30} {'train img/s':>12} {'train x':>8} {'infer img/s':>12} {'infer x':>8}   ECA paper (ResNet-50)")
    failures = []
    for spec in VARIANTS:
        t_train = statistics.median(train_times[spec])
        t_infer = statistics.median(infer_times[spec])
        r_train, r_infer = base_train / t_train, base_infer / t_infer
        key = spec.removeprefix("resnet20-").removeprefix("resnet20")
        paper = ECA_RESNET50_SPEED_RATIO.get(key)
        ref = f"{paper[0]:.2f}x / {paper[1]:.2f}x" if paper else ("(baseline)" if not key else "no published figure")
        if paper and (r_train < paper[0] or r_infer < paper[1]):
            failures.append(spec)
        print(f"{spec:<30} {args.batch / t_train:>12.0f} {r_train:>7.2f}x {args.batch / t_infer:>12.0f} {r_infer:>7.2f}x   {ref}")
    print("result:", "every variant with a published figure is at least as fast as the paper's ratio"
          if not failures else f"slower than the paper's ratio: {', '.join(failures)}")


if __name__ == "__main__":
    main()
