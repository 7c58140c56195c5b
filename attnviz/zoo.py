"""The shipped zoo (issue 5): which models, one shared recipe, and the resumable ``train_all``.

Every entry is trained on the full CIFAR-10 training set (50,000 images, read with ``imagefolder:``
from the JPEG tarball) and evaluated on the full 10,000-image test set with the same recipe, so the
variants are comparable:

- ResNet-20 (He et al. 2016, 16-32-64 widths) with no attention, SE, SE-FeLU, LGAM, CBAM, BAM, SGE, ECA
  at their documented defaults (SE hidden width as in the core issue);
- Interflow on ResNet-20's 3 stages, ``soft`` and ``per_class``;
- Interflow (``soft``) on VGG-16 cut into 4 stages, at width multiplier 0.5 (every conv has half the
  paper's channels, 32..256, so it trains on a CPU in reasonable time); ``vgg16-interflow-soft`` at the
  full width remains available to anyone with a GPU: ``attnviz train --model vgg16-interflow-soft``.

Shared recipe (:data:`ZOO_RECIPE`, issue 11): 50 epochs, batch 128, SGD with Nesterov momentum 0.9,
one-cycle schedule rising from lr/25 to 0.2 over the first 20% of the steps then falling linearly to 0,
weight decay 5e-4 on weights (not BN/bias), label smoothing 0.1, random crop (pad 4) + flip, seed 0,
``precision="auto"`` (bf16 autocast where the CPU has native bf16 kernels or on CUDA; float32 on a CPU
without them, where emulated bf16 is far slower: ``benchmarks/trainer_throughput.py`` times both) and
``memory_format="auto"`` (channels_last, except LGAM under bf16 on a CPU). Interflow's learned aggregation weights train at 0.1 x the lr with no weight decay
(``interflow_weight_lr_scale``: at the full lr they collapsed towards 0 within the first epoch and the
network stalled at 18.5%). Batch 128 rather than 256: on the 2-core AVX2 build machine a ResNet-20
step was faster per image at 128 (compare the "bare step" lines of ``benchmarks/trainer_throughput.py
--batch-size 128`` and ``--batch-size 256``), and it takes twice the steps per epoch. Issue 11's bars (:func:`accuracy_bar`): 88.5% for every ResNet-20 variant, 88% for Interflow on
ResNet-20, 89% for VGG-16 Interflow; a variant that falls short keeps its honest number in its card and
is flagged in the README table rather than tuned alone.

``train_all`` skips entries whose card says ``complete`` for the same dataset and epochs, resumes
interrupted ones from their ``.trainstate``, keeps going when one entry fails (its error is listed),
and regenerates ``README.md`` in the output folder from the cards.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from attnviz.data import portable_dataset_name
from attnviz.errors import TrainingCancelled, TrainingError
from attnviz.training import Recipe, train
from attnviz.training.state import adopt_averaging, continue_into_averaging, finished_card, same_schedule

DEFAULT_DATA = "imagefolder:../shared/datasets/cifar10-jpeg.tar.gz"

ZOO: list[tuple[str, str]] = [
    ("resnet20", "resnet20"),
    ("resnet20-se", "resnet20-se"),
    ("resnet20-se-felu", "resnet20-se-felu"),
    ("resnet20-lgam", "resnet20-lgam:zero_init_residual=true"),
    ("resnet20-cbam", "resnet20-cbam"),
    ("resnet20-bam", "resnet20-bam"),
    ("resnet20-sge", "resnet20-sge:min_group_channels=4"),
    ("resnet20-eca", "resnet20-eca"),
    ("resnet20-interflow-soft", "resnet20-interflow-soft"),
    ("resnet20-interflow-per_class", "resnet20-interflow-per_class"),
    ("vgg16-interflow-soft", "vgg16-interflow-soft:width=0.5"),
]

# Where an entry differs from the paper-literal spec, and why (issue 11, section 2; the numbers are
# the modules study's: reports/modules, small budget, 3 seeds). Copied into the entry's card as
# ``zoo_note`` when it ships, so the app and the card say which variant a checkpoint is.
ZOO_NOTES = {
    "resnet20-lgam": (
        "LGAM exactly as the paper defines it (eqs. 1-7), trained from a zero-initialised last BatchNorm in "
        "every residual branch (zero_init_residual=true, Goyal et al. 2017). Cause: each group's F_chan "
        "multiplies its input by 1.5-2 and the ladder of eq. (4) compounds that, so at the usual "
        "initialisation the stage outputs are ~4x larger and 2 of 3 small-budget runs stalled near chance; "
        "with zero-init every block starts as the identity and 0 of 3 stalled (reports/modules: "
        "lgam-zeroinit). The paper-literal initialisation stays available as the spec resnet20-lgam."
    ),
    "resnet20-sge": (
        "SGE with at least 4 channels per group (min_group_channels=4: G = 4, 8, 16 on ResNet-20's 16, 32, "
        "64 channels). Cause: the paper's G = 64 was chosen for 256-2048 channels; on 16-64 channels it "
        "leaves one channel per group, whose normalised similarity map divides by a near-zero spatial std "
        "(reports/modules: sge vs sge-4ch). The paper's G = 64 stays available as the spec resnet20-sge."
    ),
}

ZOO_RECIPE = Recipe(epochs=50, batch_size=128, lr=0.2, optimizer="nesterov", momentum=0.9, schedule="onecycle",
                    warmup_fraction=0.2, weight_decay=5e-4, label_smoothing=0.1, seed=0,
                    precision="auto", memory_format="auto")

RETRAIN_COMMAND = (f"python scripts/train_zoo.py --data {DEFAULT_DATA} --out runs/zoo --ship-to checkpoints"
                   " --handoff checkpoints/training-state --lanes 2")


def accuracy_bar(spec: str) -> float:
    """Issue 11's bars: 88.5% for the ResNet-20 variants, 88% for Interflow on ResNet-20, 89% for VGG-16."""
    if spec.startswith("vgg"):
        return 0.89
    return 0.88 if "interflow" in spec else 0.885


def default_out_dir() -> Path:
    from attnviz.paths import SHIPPED_DIR

    return SHIPPED_DIR


def ship(card_path: str | Path, ship_to: str | Path, golden_dir: str | Path | None = None) -> Path:
    """Copy a finished checkpoint (weights, then card) into ``ship_to`` and write its golden logits."""
    from attnviz.checkpoints import atomic_write_bytes
    from attnviz.golden import GOLDEN_DIR, write_golden

    card_path = Path(card_path)
    target = Path(ship_to)
    target.mkdir(parents=True, exist_ok=True)
    weights = card_path.with_suffix(".safetensors")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["dataset"] = portable_dataset_name(str(card.get("dataset", "")))
    if card.get("name") in ZOO_NOTES:
        card["zoo_note"] = ZOO_NOTES[card["name"]]
    atomic_write_bytes(target / weights.name, weights.read_bytes())
    # the card last: it names the weights' hash
    atomic_write_bytes(target / card_path.name, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    write_golden(target / card_path.name, golden_dir or GOLDEN_DIR)
    return target / card_path.name


def _claim(out: Path, name: str) -> Path | None:
    """Atomically claim ``name`` for this process (lanes share one queue); ``None`` if another has it."""
    import os

    path = out / f"{name}.claim"
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return path


def train_all(data: str = DEFAULT_DATA, out_dir: str | Path | None = None, only: list[str] | None = None,
              device: str | None = None, recipe: Recipe | None = None, log=None,
              ship_to: str | Path | None = None, claim: bool = False,
              cancel_event=None, handoff: str | Path | None = None) -> dict[str, str]:
    """Train every zoo entry (or ``only`` those names) into ``out_dir``; returns {name: outcome}.

    Unattended and resumable: finished entries are skipped, interrupted ones resume, a failing entry
    is reported and the next one starts. A cancel (Ctrl-C / SIGTERM via the CLI) stops the whole run.
    With ``ship_to`` (e.g. ``checkpoints/``), ``out_dir`` is a staging folder: each entry is copied
    there with its golden logits the moment it completes, so the shipped folder never holds a
    half-trained model, and ``ship_to/README.md`` is regenerated. With ``claim``, an entry is only
    trained by the process that creates ``out_dir/NAME.claim`` first (parallel lanes, see ``--lanes``).
    With ``handoff`` (a folder that is committed, e.g. ``checkpoints/training-state``), an entry whose
    staging folder has no resume state starts from ``handoff/NAME.trainstate`` when there is one, an
    interrupted entry leaves its state there, and a finished one removes it: a session that ends
    hands its unfinished training to the next one through the repository.
    """
    from attnviz.data import load_dataset

    out = Path(out_dir) if out_dir is not None else default_out_dir()
    recipe = recipe or ZOO_RECIPE
    log = log or (lambda text: print(text, flush=True))
    known = {name for name, _ in ZOO}
    unknown = sorted(set(only or []) - known)
    if unknown:
        from attnviz.errors import AttnvizError

        raise AttnvizError(f"Unknown zoo name(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    dataset = load_dataset(data) if isinstance(data, str) else data  # decoded once for every entry
    outcomes: dict[str, str] = {}
    try:
        specs = dict(ZOO)
        out.mkdir(parents=True, exist_ok=True)
        for name in (only or [n for n, _ in ZOO]):  # ``only`` also sets the order
            spec = specs[name]
            if cancel_event is not None and cancel_event.is_set():
                raise TrainingCancelled("The zoo run was cancelled before its next entry.")
            claim_path = _claim(out, name) if claim else None
            if claim and claim_path is None:
                continue  # another lane trains it

            def report(event, name=name):
                kind = event["event"]
                if kind == "epoch":
                    log(f"{name}: epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f} "
                        f"train {event['train_acc']:.4f} test {event['test_acc']:.4f} ({event['time_s']:.0f} s)")
                elif kind == "start":
                    log(f"{name}: training {event['spec']} on {event['n_train']} images, {event['device']}"
                        + (f", resumed at {event['resumed_at']}" if event.get("resumed_at") else ""))

            handed = Path(handoff) / f"{name}.trainstate" if handoff is not None else None
            staged = out / f"{name}.trainstate"
            shipped = Path(ship_to) / f"{name}.json" if ship_to is not None else None
            if handed is not None and handed.exists() and not staged.exists():
                shutil.copyfile(handed, staged)
                log(f"{name}: resuming from the handed-off state {handed}")
            if staged.exists() and adopt_averaging(staged, recipe):
                log(f"{name}: its resume state goes on into the recipe's weight-averaging phase")
            elif not staged.exists() and shipped is not None and shipped.exists():
                if finished_card(shipped.parent, name, spec, dataset.name, recipe) is not None:
                    outcomes[name] = "complete: already shipped"
                    if claim_path is not None:
                        claim_path.unlink(missing_ok=True)
                    continue
                if continue_into_averaging(shipped, staged, recipe):
                    log(f"{name}: continuing the shipped {recipe.epochs}-epoch checkpoint into weight averaging")
            try:
                result = train(spec, dataset, recipe, out, name, callback=report, device=device, resume=True,
                               cancel_event=cancel_event)
                if handed is not None:
                    handed.unlink(missing_ok=True)
                acc = result.card["metrics"]["test_acc"]
                outcomes[name] = f"complete: test acc {acc:.4f}"
                if ship_to is not None:
                    ship(result.checkpoint, ship_to)
                    write_readme(ship_to, data=data if isinstance(data, str) else dataset.name)
                    outcomes[name] += f", shipped to {ship_to}"
                log(f"{name}: {outcomes[name]}")
            except TrainingCancelled:
                outcomes[name] = "cancelled"
                if handed is not None and staged.exists():
                    handed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(staged, handed)
                    log(f"{name}: resume state handed off to {handed}")
                raise
            except TrainingError as err:
                outcomes[name] = f"failed: {err}"
                log(f"{name}: {outcomes[name]}")
            finally:
                if claim_path is not None:
                    claim_path.unlink(missing_ok=True)
    finally:
        write_readme(ship_to if ship_to is not None else out, data=data if isinstance(data, str) else dataset.name)
    return outcomes


def _schedule_text(recipe: Recipe) -> str:
    text = f"{recipe.epochs} epochs"
    if recipe.average_epochs:
        text += f" + {recipe.average_epochs} weight-averaging epochs at lr {recipe.resolved_average_lr:g}"
    return text


def _fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def write_readme(out_dir: str | Path, data: str = DEFAULT_DATA) -> Path:
    """Regenerate ``out_dir/README.md``: one table built from the cards found there."""
    from attnviz.checkpoints import atomic_write_bytes, read_card
    from attnviz.errors import CheckpointError

    out = Path(out_dir)
    order = {name: i for i, (name, _) in enumerate(ZOO)}
    cards = []
    for card_path in sorted(out.glob("*.json")):
        try:
            cards.append(read_card(card_path))
        except CheckpointError:
            continue
    cards.sort(key=lambda c: (order.get(c.get("name"), len(order)), str(c.get("name"))))
    lines = [
        "# Shipped checkpoints",
        "",
        "Generated by `attnviz.zoo.write_readme` from the model cards in this folder; every number below is",
        "copied from a card, and every card's `metrics` were measured by `attnviz eval` semantics (CPU, float32,",
        "the full test split of the card's dataset). Check one with `attnviz eval checkpoints/NAME.json`.",
        "",
        "| name | spec | params | MFLOPs | test acc | bar | train time (device) | epochs | status |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for card in cards:
        metrics = card.get("metrics") or {}
        acc = metrics.get("test_acc")
        bar = accuracy_bar(str(card.get("spec", "")))
        flag = "" if acc is None or acc >= bar else " (below bar)"
        flops = card.get("flops")
        card_recipe = card.get("recipe") or {}
        epochs = card_recipe.get("epochs")
        averaged = int(card_recipe.get("average_epochs") or 0)
        total = epochs + averaged if isinstance(epochs, int) else epochs
        done = card.get("epochs_done")
        epochs_text = f"{epochs}" + (f" + {averaged} averaged" if averaged else "")
        if done not in (None, total):
            epochs_text = f"{done:g} of {epochs_text}"
        seconds = card.get("train_time_s")
        time_text = f"{seconds / 60:.1f} min ({card.get('device', '?')})" if isinstance(seconds, (int, float)) else "?"
        flops_text = f"{flops / 1e6:.1f}" if isinstance(flops, (int, float)) else "?"
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%{flag}"
        lines.append(
            f"| {card.get('name')} | `{card.get('spec')}` | {_fmt_int(card.get('params'))} | {flops_text} | "
            f"{acc_text} | {100 * bar:.0f}% | {time_text} | {epochs_text} | {card.get('status', '?')} |"
        )
    recipe = cards[0].get("recipe") if cards else json.loads(json.dumps(ZOO_RECIPE.to_dict()))
    lines += [
        "",
        f"Dataset: `{portable_dataset_name(str(cards[0].get('dataset') if cards else data))}` ({_fmt_int(cards[0].get('n_train') if cards else None)} "
        f"training and {_fmt_int((cards[0].get('metrics') or {}).get('n_test') if cards else None)} test images; the zoo "
        "uses CIFAR-10, Krizhevsky 2009, from its JPEG mirror).",
        "FLOPs: `torch.utils.flop_counter` on one 32x32 image (a multiply-add counts 2). `vgg16-interflow-soft` is",
        "VGG-16 at width multiplier 0.5 (see `attnviz/zoo.py`).",
        "",
        "Shared recipe (from the cards): `" + json.dumps(recipe, sort_keys=True) + "`",
        "",
    ]
    # A field added to Recipe later (e.g. interflow_weight_lr_scale) shows up here for the cards that
    # have it, so the table never claims more sameness than the cards do.
    differences = []
    for card in cards[1:]:
        other = card.get("recipe") or {}
        changed = {k: other.get(k) for k in sorted(set(other) | set(recipe or {})) if other.get(k) != (recipe or {}).get(k)}
        if changed:
            differences.append(f"`{card.get('name')}`: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()))
    if differences:
        lines += ["Where a card's recipe differs from that: " + "; ".join(differences) + ".", ""]
    missing = [name for name, _ in ZOO if name not in {c.get("name") for c in cards}]
    earlier = [str(c.get("name")) for c in cards if not same_schedule(c.get("recipe"), ZOO_RECIPE)]
    if earlier:
        lines += [
            f"**Not yet on the zoo recipe.** {', '.join(earlier)} still ship an earlier, shorter recipe's "
            f"checkpoint (see its epochs above); the zoo recipe ({_schedule_text(ZOO_RECIPE)}) replaces "
            "each one as it finishes (its card records the training time and device).",
            "",
        ]
    if missing:
        lines += [f"Not trained yet (the app lists them as untrained): {', '.join(missing)}.", ""]
    lines += [
        "Retrain the whole zoo (unattended; finished models are skipped, interrupted ones resume):",
        "",
        "```",
        RETRAIN_COMMAND,
        "```",
        "",
        "or `attnviz zoo train-all --data imagefolder:PATH/cifar10-jpeg.tar.gz --out checkpoints`.",
        "",
    ]
    path = out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    return path


def _main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/train_zoo.py``."""
    import argparse
    import signal
    import threading

    parser = argparse.ArgumentParser(description="Train the shipped zoo (resumable, unattended).")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--out", default=None, help="default: the repository's checkpoints/")
    parser.add_argument("--ship-to", default=None,
                        help="treat --out as staging and copy each finished model (+ golden logits) here")
    parser.add_argument("--only", action="append", help="only these zoo names (repeatable)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=None, help=f"override the recipe's {ZOO_RECIPE.epochs}")
    parser.add_argument("--readme-only", action="store_true", help="only regenerate README.md")
    parser.add_argument("--handoff", default=None,
                        help="folder of resume states kept in the repository between sessions "
                             "(e.g. checkpoints/training-state)")
    parser.add_argument("--lanes", type=int, default=1,
                        help="train this many models at once, one CPU core (one thread) each, from one queue")
    parser.add_argument("--lane-core", type=int, default=None, help=argparse.SUPPRESS)  # set by --lanes
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out_dir()
    if args.readme_only:
        print(write_readme(out, args.data))
        return 0
    if args.lanes > 1 and args.lane_core is None:
        return _run_lanes(args, argv if argv is not None else sys.argv[1:], out)
    if args.lane_core is not None:
        import os

        os.sched_setaffinity(0, {args.lane_core})  # the trainer then uses one thread
    recipe = ZOO_RECIPE if args.epochs is None else Recipe(**{**ZOO_RECIPE.__dict__, "epochs": args.epochs})
    # SIGTERM/SIGINT (a scheduler, Ctrl-C, the lanes' parent) cancel at the next step: the trainer saves
    # the weights and the exact position, so the next start resumes there and loses nothing.
    cancel = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: cancel.set())
    try:
        outcomes = train_all(args.data, out, args.only, args.device, recipe,
                             ship_to=Path(args.ship_to) if args.ship_to else None,
                             claim=args.lane_core is not None, cancel_event=cancel,
                             handoff=Path(args.handoff) if args.handoff else None)
    except TrainingCancelled:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    for name, outcome in outcomes.items():
        print(f"{name:<30} {outcome}")
    return 0 if all(o.startswith("complete") for o in outcomes.values()) else 1


def _run_lanes(args, argv: list[str], out: Path) -> int:
    """``--lanes N``: N worker processes, each pinned to one core, taking models from one queue.

    On this project's 2-core CPU, two single-thread trainings together ran 274 img/s against 212-246
    for one two-thread training (ResNet-20, batch 128, float32 channels_last): one thread per model
    wastes no time in OpenMP barriers. Stale claims from an earlier, killed run are removed first.
    """
    import os
    import signal
    import subprocess

    cores = sorted(os.sched_getaffinity(0))
    if args.lanes > len(cores):
        print(f"error: --lanes {args.lanes} is more than the {len(cores)} cores this process may use", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.claim"):
        stale.unlink()
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_zoo.py"
    base = [a for a in argv if not a.startswith("--lanes")]
    if "--lanes" in argv:  # "--lanes N" given as two words
        i = argv.index("--lanes")
        base = argv[:i] + argv[i + 2:]
    workers = [subprocess.Popen([sys.executable, str(script), *base, "--lane-core", str(cores[i])])
               for i in range(args.lanes)]

    def forward(signum, _frame):
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [worker.wait() for worker in workers]
    ship_to = Path(args.ship_to) if args.ship_to else out
    write_readme(ship_to, args.data)
    return max(codes)
