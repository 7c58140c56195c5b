"""Attention modules' fast paths vs their plain versions: a ResNet-20 training step each, one process.

    python benchmarks/module_fast_paths.py [--batch-size 128] [--steps 5] [--rounds 3] [--threads 2]
                                           [--modules cbam,sge]

- ``cbam``: :class:`attnviz.layers.cbam.CBAM` max-pools with index-based ``max`` (as the official
  code); the baseline uses ``amax``, whose backward splits the gradient over ties and builds full-size
  masks to do so. Same forward; only the subgradient at a tie differs.
- ``sge``: :class:`attnviz.layers.sge.SGE` casts its float32 gate to the feature map's dtype before
  the multiply; the baseline multiplies a bf16 map by the float32 gate under autocast, which makes a
  float32 copy of the whole map. Identical in float32.

Each module's forward is checked equal to its baseline's (float32) before timing. A full training
step (forward, loss, backward, SGD step) of the zoo's spec is timed in every precision this machine
trains in (float32; bf16 autocast where the CPU has native bf16 kernels) and both memory formats;
rounds alternate baseline and shipped, and medians are compared, so the ratio holds on a machine with
some other load. Prints images/s and the ratio shipped / baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.layers.cbam import CBAM  # noqa: E402
from attnviz.layers.sge import SGE  # noqa: E402
from attnviz.models.registry import create_model  # noqa: E402
from attnviz.training import cpu_supports_bf16  # noqa: E402


def cbam_amax_forward(self: CBAM, x: torch.Tensor) -> torch.Tensor:
    """CBAM with ``amax`` poolings (the implementation before the fast path)."""
    channel_weights = self.tap_channel(self.channel_gate(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))))
    refined = x * channel_weights[:, :, None, None]
    pooled = torch.cat([refined.mean(dim=1, keepdim=True), refined.amax(dim=1, keepdim=True)], dim=1)
    return refined * self.tap_spatial(self.spatial_gate(self.spatial_bn(self.spatial_conv(pooled))))


def sge_float32_gate_forward(self: SGE, x: torch.Tensor) -> torch.Tensor:
    """SGE multiplying by its float32 gate as it is (the implementation before the fast path)."""
    b, c, h, w = x.shape
    grouped = x.reshape(b, self.groups, c // self.groups, h, w)
    flat = (grouped * grouped.mean(dim=(3, 4), keepdim=True)).sum(dim=2).reshape(b, self.groups, -1)
    std = flat.std(dim=2, keepdim=True, correction=1 if h * w > 1 else 0)
    normalised = ((flat - flat.mean(dim=2, keepdim=True)) / (std + self.eps)).reshape(b, self.groups, h, w)
    group_gate = self.tap_spatial(self.gate(normalised * self.weight + self.bias))
    return (grouped * group_gate.unsqueeze(2)).reshape(b, c, h, w)


# name -> (module class, baseline forward, zoo spec, a module for the equality check)
CASES: dict[str, tuple[type, Callable, str, Callable[[], torch.nn.Module]]] = {
    "cbam": (CBAM, cbam_amax_forward, "resnet20-cbam", lambda: CBAM(32)),
    "sge": (SGE, sge_float32_gate_forward, "resnet20-sge:min_group_channels=4", lambda: SGE(32, groups=8)),
}


def images_per_second(cls: type, forward: Callable, spec: str, dtype, memory_format, batch_size: int,
                      steps: int) -> float:
    original = cls.forward
    cls.forward = forward
    try:
        torch.manual_seed(0)
        model = create_model(spec, num_classes=10).to(memory_format=memory_format).train()
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
        cls.forward = original


def check_same_forward(name: str) -> None:
    cls, baseline, _, build = CASES[name]
    torch.manual_seed(0)
    module = build().eval()
    for parameter in module.parameters():  # away from the initial values, so every term matters
        torch.nn.init.normal_(parameter, std=0.5)
    sample = torch.randn(4, module.channels, 8, 8)
    with torch.no_grad():
        if not torch.equal(module(sample), baseline(module, sample)):
            raise SystemExit(f"the shipped {name} forward differs from its baseline")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modules", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    args = parser.parse_args(argv)
    names = [n for n in args.modules.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; choose from {', '.join(CASES)}")
    torch.set_num_threads(args.threads)

    precisions = [("float32", None)] + ([("bf16 autocast", torch.bfloat16)] if cpu_supports_bf16() else [])
    formats = [("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)]
    print(f"training step, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds x {args.steps} steps, "
          "images/s (median)")
    for name in names:
        check_same_forward(name)
        cls, baseline, spec, _ = CASES[name]
        for precision_name, dtype in precisions:
            for format_name, memory_format in formats:
                shipped, plain = [], []
                for _ in range(args.rounds):
                    plain.append(images_per_second(cls, baseline, spec, dtype, memory_format, args.batch_size, args.steps))
                    shipped.append(images_per_second(cls, cls.forward, spec, dtype, memory_format, args.batch_size,
                                                     args.steps))
                shipped_median, plain_median = statistics.median(shipped), statistics.median(plain)
                print(f"  {spec:34s} {precision_name:13s} {format_name:13s} baseline {plain_median:7.1f}  "
                      f"shipped {shipped_median:7.1f}  ratio {shipped_median / plain_median:.2f}x")


if __name__ == "__main__":
    main()
