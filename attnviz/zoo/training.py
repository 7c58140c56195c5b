"""Training the zoo: ``train_all`` (staged, resumable, handed off between sessions), ``ship`` and the
lanes of ``scripts/train_zoo.py`` (``_main``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from attnviz.data import portable_dataset_name
from attnviz.errors import TrainingCancelled, TrainingError
from attnviz.training import Recipe, train
from attnviz.training.state import adopt_averaging, continue_into_averaging, finished_card
from attnviz.zoo.entries import DEFAULT_DATA, ZOO, ZOO_NOTES, ZOO_RECIPE, default_out_dir
from attnviz.zoo.readme import write_readme


def ship(card_path: str | Path, ship_to: str | Path, golden_dir: str | Path | None = None) -> Path:
    """Copy a finished checkpoint (weights, then card) into ``ship_to`` and write its golden logits.

    The golden logits go to ``golden_dir``; without one, to the repository's ``tests/golden`` only when
    ``ship_to`` is the repository's own ``checkpoints/`` (shipping anywhere else must not touch the
    tests of the shipped zoo), else nowhere.
    """
    from attnviz.checkpoints import atomic_write_bytes
    from attnviz.golden import GOLDEN_DIR, write_golden
    from attnviz.paths import SHIPPED_DIR

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
    if golden_dir is None and target.resolve() == SHIPPED_DIR.resolve():
        golden_dir = GOLDEN_DIR
    if golden_dir is not None:
        write_golden(target / card_path.name, golden_dir)
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
    staging folder has no resume state starts from ``handoff/NAME.trainstate`` when there is one, a
    running entry refreshes its state there after every epoch (and on a cancel), and a finished one
    removes it: a session that ends, even abruptly, hands its unfinished training to the next one
    through the repository.
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
    data_label = data if isinstance(data, str) else dataset.name
    outcomes: dict[str, str] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in (only or [n for n, _ in ZOO]):  # ``only`` also sets the order
            if cancel_event is not None and cancel_event.is_set():
                raise TrainingCancelled("The zoo run was cancelled before its next entry.")
            claim_path = _claim(out, name) if claim else None
            if claim and claim_path is None:
                continue  # another lane trains it
            try:
                outcomes[name] = _train_entry(name, dataset, recipe, out, device=device, log=log, ship_to=ship_to,
                                              handoff=handoff, cancel_event=cancel_event, data_label=data_label)
            finally:
                if claim_path is not None:
                    claim_path.unlink(missing_ok=True)
    finally:
        write_readme(ship_to if ship_to is not None else out, data=data_label)
    return outcomes


def _epoch_logger(name: str, log):
    def report(event):
        kind = event["event"]
        if kind == "epoch":
            log(f"{name}: epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f} "
                f"train {event['train_acc']:.4f} test {event['test_acc']:.4f} ({event['time_s']:.0f} s)")
        elif kind == "start":
            log(f"{name}: training {event['spec']} on {event['n_train']} images, {event['device']}"
                + (f", resumed at {event['resumed_at']}" if event.get("resumed_at") else ""))
    return report


def _hand_off(staged: Path, handed: Path) -> None:
    """Copy the resume state into the handoff folder, atomically (a reader never sees half a file)."""
    handed.parent.mkdir(parents=True, exist_ok=True)
    partial = handed.with_name(handed.name + ".partial")
    shutil.copyfile(staged, partial)
    os.replace(partial, handed)


def _handing_off_each_epoch(report, staged: Path, handed: Path):
    """Also hand the resume state off after every epoch's checkpoint, not only on a clean cancel: a
    session can end without one (the machine is taken away), and the last epoch must survive it."""
    def on_event(event):
        report(event)
        if event["event"] == "epoch" and staged.exists():
            _hand_off(staged, handed)
    return on_event


def _starting_point(name: str, spec: str, dataset, recipe: Recipe, staged: Path, handed: Path | None,
                    shipped: Path | None, log) -> bool:
    """Put the entry's resume state in place (handed off, or a shipped main-schedule card continued into
    the averaging phase); False when the shipped checkpoint already is this exact run."""
    if handed is not None and handed.exists() and not staged.exists():
        shutil.copyfile(handed, staged)
        log(f"{name}: resuming from the handed-off state {handed}")
    if staged.exists():
        if adopt_averaging(staged, recipe):
            log(f"{name}: its resume state goes on into the recipe's weight-averaging phase")
        return True
    if shipped is None or not shipped.exists():
        return True
    if finished_card(shipped.parent, name, spec, dataset.name, recipe) is not None:
        return False
    if continue_into_averaging(shipped, staged, recipe):
        log(f"{name}: continuing the shipped {recipe.epochs}-epoch checkpoint into weight averaging")
    return True


def _train_entry(name: str, dataset, recipe: Recipe, out: Path, *, device, log, ship_to, handoff, cancel_event,
                 data_label: str) -> str:
    """Train (or resume, or skip) one entry; ship it when it completes. Returns its outcome line."""
    spec = dict(ZOO)[name]
    handed = Path(handoff) / f"{name}.trainstate" if handoff is not None else None
    staged = out / f"{name}.trainstate"
    shipped = Path(ship_to) / f"{name}.json" if ship_to is not None else None
    if not _starting_point(name, spec, dataset, recipe, staged, handed, shipped, log):
        return "complete: already shipped"
    report = _epoch_logger(name, log)
    if handed is not None:
        report = _handing_off_each_epoch(report, staged, handed)
    try:
        result = train(spec, dataset, recipe, out, name, callback=report, device=device,
                       resume=True, cancel_event=cancel_event)
    except TrainingCancelled:
        if handed is not None and staged.exists():
            _hand_off(staged, handed)
            log(f"{name}: resume state handed off to {handed}")
        raise
    except TrainingError as err:
        log(f"{name}: failed: {err}")
        return f"failed: {err}"
    if handed is not None:
        handed.unlink(missing_ok=True)
    outcome = f"complete: test acc {result.card['metrics']['test_acc']:.4f}"
    if ship_to is not None:
        ship(result.checkpoint, ship_to)
        write_readme(ship_to, data=data_label)
        outcome += f", shipped to {ship_to}"
    log(f"{name}: {outcome}")
    return outcome


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
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_zoo.py"
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
