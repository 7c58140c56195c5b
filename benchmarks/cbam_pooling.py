"""CBAM's max pooling: index-based ``max`` (shipped) vs ``amax`` (even split over ties), one process.

    python benchmarks/cbam_pooling.py [--batch-size 128] [--steps 6] [--rounds 3] [--threads 2]

Times a full ResNet-20 + CBAM training step (forward, loss, backward, SGD step) with the shipped
:class:`attnviz.layers.cbam.CBAM` and with the same module whose two max poolings use ``amax``, in
every precision this machine trains in (float32; bf16 autocast where the CPU has native bf16 kernels)
and both memory formats. The forwards are equal (checked here); the backward differs only in how a
tie shares the gradient. Rounds alternate the two variants and medians are compared, so the ratio
holds on a machine with some other load. Prints images/s and the ratio shipped / amax.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.layers.cbam import CBAM  # noqa: E402
from attnviz.models.registry import create_model  # noqa: E402
from attnviz.training import cpu_supports_bf16  # noqa: E402


def amax_forward(self: CBAM, x: torch.Tensor) -> torch.Tensor:
    """The baseline: CBAM with ``amax`` poolings (the implementation before this benchmark)."""
    channel_weights = self.tap_channel(self.channel_gate(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))))
    refined = x * channel_weights[:, :, None, None]
    pooled = torch.cat([refined.mean(dim=1, keepdim=True), refined.amax(dim=1, keepdim=True)], dim=1)
    return refined * self.tap_spatial(self.spatial_gate(self.spatial_bn(self.spatial_conv(pooled))))


def images_per_second(forward, dtype, memory_format, batch_size: int, steps: int) -> float:
    original = CBAM.forward
    CBAM.forward = forward
    try:
        torch.manual_seed(0)
        model = create_model("resnet20-cbam", num_classes=10).to(memory_format=memory_format).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        inputs = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
        labels = torch.randint(0, 10, (batch_size,))

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = model(inputs)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()

        step()  # warm-up: allocator and oneDNN primitive caches
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch_size / (time.perf_counter() - start)
    finally:
        CBAM.forward = original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    module = CBAM(32).eval()
    sample = torch.randn(4, 32, 8, 8)
    with torch.no_grad():
        if not torch.equal(module(sample), amax_forward(module, sample)):
            raise SystemExit("the shipped CBAM forward differs from the amax baseline")

    precisions = [("float32", None)] + ([("bf16 autocast", torch.bfloat16)] if cpu_supports_bf16() else [])
    formats = [("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)]
    print(f"resnet20-cbam training step, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps, images/s (median)")
    for precision_name, dtype in precisions:
        for format_name, memory_format in formats:
            shipped, baseline = [], []
            for _ in range(args.rounds):
                baseline.append(images_per_second(amax_forward, dtype, memory_format, args.batch_size, args.steps))
                shipped.append(images_per_second(CBAM.forward, dtype, memory_format, args.batch_size, args.steps))
            shipped_median, baseline_median = statistics.median(shipped), statistics.median(baseline)
            print(f"  {precision_name:13s} {format_name:13s} amax {baseline_median:7.1f}  shipped {shipped_median:7.1f}"
                  f"  ratio {shipped_median / baseline_median:.2f}x")


if __name__ == "__main__":
    main()
