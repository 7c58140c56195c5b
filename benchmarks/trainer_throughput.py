"""Trainer throughput vs a bare hand-written PyTorch loop, both measured in this one process.

    python benchmarks/trainer_throughput.py [--spec resnet20] [--device cpu] [--batch-size 128]
                                            [--epochs 3] [--rounds 3] [--data sample] [--no-app-run]
                                            [--formats-only]

First every (precision, memory format) pair this machine allows (float32 always; bf16 autocast where
the CPU has native bf16 kernels, or on CUDA) x (contiguous, channels_last) is timed for a few bare
steps and printed; the bare loop then runs in the *fastest* of them, so the ratio compares the trainer
(``precision="auto"``, ``memory_format="auto"``) with the best this machine can do, not with float32.
The bare loop uses the same in-memory uint8 tensors, model spec, batch size, optimiser and
augmentation call as the trainer, and nothing else: shuffle, gather, augment, normalise, forward,
loss, backward, step.
The trainer's time per epoch is its training phase (every step with its loss/accuracy bookkeeping,
non-finite checks, cancel checks, learning-rate schedule and step events): that is the ratio with the
target. The per-epoch attention statistics (one probe batch) and test-set evaluation are fixed extra
work per epoch that a bare loop does not do, so they are printed separately, with the ratios they
give at this data's epoch length and at CIFAR-10's. Runs alternate bare/trainer over ``--rounds`` rounds,
the first epoch of every run is a warm-up and not counted, and medians are compared, which keeps
the ratio meaningful on a shared machine. Target: ratio >= 0.95.

Finally the app's default quick run (``attnviz train --model resnet20-se-felu --data sample --epochs 1
--batch-size 128``, what the Train page submits) is timed end to end as a fresh process, against the
2-minute goal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnviz.data import load_dataset  # noqa: E402
from attnviz.device import describe_device, pick_device  # noqa: E402
from attnviz.models.registry import create_model  # noqa: E402
from attnviz.training import (  # noqa: E402
    Recipe,
    augment_batch,
    cpu_supports_bf16,
    lr_at,
    precision_label,
    resolve_precision,
    train,
)


def _autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def fastest_format(spec, data, batch_size: int, device: torch.device, steps: int = 8):
    """Time ``steps`` bare training steps per (dtype, channels_last); returns (best, {label: img/s})."""
    native_bf16 = device.type == "cuda" or cpu_supports_bf16()
    speeds = {}
    for dtype in (None, torch.bfloat16):
        # without native kernels bf16 is emulated: timed (few steps: it is slow) to show it, never chosen
        runs = steps if (dtype is None or native_bf16) else 4
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = create_model(spec, num_classes=data.num_classes, in_chans=data.in_chans).to(device)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(batch_size, data.in_chans, *data.input_size, device=device).contiguous(memory_format=fmt)
            y = torch.randint(0, data.num_classes, (batch_size,), device=device)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                with _autocast(device, dtype):
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - started)
            speeds[(dtype, channels_last)] = batch_size / statistics.median(times[2:])
    usable = {k: v for k, v in speeds.items() if k[0] is None or native_bf16}
    best = max(usable, key=usable.get)
    return best, speeds


def _label(dtype, channels_last: bool) -> str:
    return f"{'bf16' if dtype is not None else 'fp32'} {'channels_last' if channels_last else 'contiguous'}"


def bare_loop(spec, data, recipe: Recipe, device: torch.device, dtype, channels_last: bool) -> list[float]:
    """Seconds per epoch of the plainest loop that does the same training work, in the given format."""
    cuda = device.type == "cuda"
    torch.manual_seed(recipe.seed)
    model = create_model(spec, num_classes=data.num_classes, in_chans=data.in_chans).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.resolved_lr, momentum=0.9, nesterov=True,
                                weight_decay=recipe.weight_decay)
    images = data.train_images.to(device) if cuda else data.train_images
    labels = data.train_labels.to(device) if cuda else data.train_labels
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    batch = recipe.batch_size
    steps = images.shape[0] // batch
    total = steps * recipe.epochs
    times = []
    model.train()
    for epoch in range(recipe.epochs):
        started = time.perf_counter()
        order = torch.randperm(images.shape[0], generator=generator, device=device)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, epoch * steps + step, total)
            index = order[step * batch : (step + 1) * batch]
            x = augment_batch(images[index], generator)
            x = (x.float() / 255 - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, dtype):
                loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def trainer_run(spec, data, recipe: Recipe, device: torch.device, out_dir: Path):
    """(training steps, probe statistics, test evaluation) seconds per epoch, from the trainer's events."""
    epochs = []
    train(spec, data, recipe, out_dir, callback=lambda e: epochs.append(e) if e["event"] == "epoch" else None,
          device=str(device))
    return ([e["time_s"] for e in epochs], [e["stats_time_s"] for e in epochs], [e["eval_time_s"] for e in epochs])


def app_quick_run(device: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "attnviz", "train", "--model", "resnet20-se-felu",
                               "--data", "sample", "--epochs", "1", "--batch-size", "128", "--device", device,
                               "--out", out, "--json-progress"], capture_output=True, text=True, cwd=REPO)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"the quick run failed: {proc.stderr[-500:]}")
        end = json.loads(proc.stdout.splitlines()[-1])
        print(f"app quick run: {elapsed:.1f} s end to end (test acc {end['test_acc']:.3f}); goal < 120 s "
              f"-> {'OK' if elapsed < 120 else 'TOO SLOW'}")
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="resnet20")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-app-run", action="store_true")
    parser.add_argument("--formats-only", action="store_true",
                        help="only time the bare step in every format and print the trainer's choice")
    args = parser.parse_args()

    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    data = load_dataset(args.data)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, seed=0)
    images_per_epoch = (data.n_train // args.batch_size) * args.batch_size
    print(f"{args.spec} on {data.name} ({data.n_train} images), batch {args.batch_size}, {describe_device(device)}, "
          f"torch {torch.__version__}")
    (dtype, channels_last), speeds = fastest_format(args.spec, data, args.batch_size, device)
    native = device.type == "cuda" or cpu_supports_bf16()
    for (d, cl), speed in speeds.items():
        emulated = " (emulated: no native bf16 on this CPU)" if d is not None and not native else ""
        print(f"  bare step, {_label(d, cl):<18}: {speed:8.1f} img/s{emulated}")
    print(f"fastest bare format: {_label(dtype, channels_last)} (the bare loop below uses it)")
    probe_model = create_model(args.spec, num_classes=data.num_classes, in_chans=data.in_chans)
    print(f"trainer (precision=auto, memory_format=auto): {precision_label(*resolve_precision(recipe, device, probe_model))}")
    if args.formats_only:
        return 0
    bare, trainer, stats, evals = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            order = ("bare", "trainer") if round_index % 2 == 0 else ("trainer", "bare")
            for which in order:
                if which == "bare":
                    bare += bare_loop(args.spec, data, recipe, device, dtype, channels_last)[1:]
                else:
                    phase, probe, evaluation = trainer_run(args.spec, data, recipe, device, Path(tmp) / f"r{round_index}")
                    trainer += phase[1:]
                    stats += probe[1:]
                    evals += evaluation[1:]
            print(f"round {round_index + 1}: bare {statistics.median(bare):.2f} s/epoch, "
                  f"trainer {statistics.median(trainer):.2f} s/epoch")
    bare_s, trainer_s = statistics.median(bare), statistics.median(trainer)
    stats_s, eval_s = statistics.median(stats), statistics.median(evals)
    print(f"bare loop : {images_per_epoch / bare_s:8.1f} img/s  ({bare_s:.2f} s/epoch, median of {len(bare)}, "
          f"{_label(dtype, channels_last)})")
    print(f"trainer   : {images_per_epoch / trainer_s:8.1f} img/s  ({trainer_s:.2f} s/epoch of training steps)")
    ratio = bare_s / trainer_s
    print(f"ratio trainer/bare (training steps) = {ratio:.3f}  (target >= 0.95 -> {'OK' if ratio >= 0.95 else 'BELOW'})")
    # Fixed per-epoch work the bare loop does not do: its share shrinks with the epoch's length
    # (this data: {steps} steps per epoch; CIFAR-10's 50,000 images at batch 128: 390).
    steps = data.n_train // args.batch_size
    print(f"per-epoch attention statistics: {stats_s:.2f} s (probe batch); ratio with them = "
          f"{bare_s / (trainer_s + stats_s):.3f} at {steps} steps per epoch, "
          f"{bare_s * 390 / steps / (trainer_s * 390 / steps + stats_s):.3f} at 390 (CIFAR-10, batch 128)")
    print(f"per-epoch test evaluation: {eval_s:.2f} s ({data.n_test} images); "
          f"ratio with it too = {bare_s / (trainer_s + stats_s + eval_s):.3f}")
    if not args.no_app_run:
        app_quick_run(args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
