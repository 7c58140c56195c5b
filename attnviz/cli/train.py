"""``attnviz train``: train one model and write its checkpoint (safetensors + model card).

Exit status: 0 finished; 130 cancelled (Ctrl-C / SIGTERM / a ``CANCEL`` file in ``--out``: the run stops
after the current step and keeps a consistent checkpoint; a second Ctrl-C aborts at once); 3 the loss
diverged (the last good checkpoint is kept); 1 the run failed (e.g. the disk is full); 2 bad arguments.

People get a tqdm progress bar on stderr; ``--json-progress`` prints one JSON object per event on
stdout instead (the app reads those). Under ``torchrun`` only rank 0 prints.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from attnviz.jsonutil import finite


def register(sub) -> None:
    parser = sub.add_parser("train", help="train a model on a dataset and write a checkpoint")
    parser.add_argument("--model", required=True, metavar="SPEC", help="model spec, e.g. resnet20-se-felu")
    parser.add_argument("--data", default="sample", metavar="DATASET",
                        help="sample (default), cifar10, cifar100, mnist, fashionmnist or imagefolder:PATH")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default ~/.attnviz/runs)")
    parser.add_argument("--name", default=None, help="checkpoint name (default: from the spec)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.2 x batch/256)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    parser.add_argument("--schedule", choices=["onecycle", "cosine"], default=None)
    parser.add_argument("--optimizer", choices=["sgd", "nesterov"], default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument("--aux-weight", type=float, default=None, help="Interflow auxiliary branch-loss weight")
    parser.add_argument("--interflow-weight-lr-scale", type=float, default=None,
                        help="Interflow's learned aggregation weights train at this fraction of the lr "
                             "(default: the recipe's, 0.1)")
    parser.add_argument("--average-epochs", type=int, default=None,
                        help="stochastic weight averaging: this many more epochs after the schedule (default 0)")
    parser.add_argument("--average-lr", type=float, default=None,
                        help="the averaging phase's lr (default a quarter of the peak lr)")
    parser.add_argument("--average-schedule", choices=["constant", "cyclic"], default=None,
                        help="constant lr, or one falling cycle per epoch (default constant)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="auto (default): bf16 autocast on CUDA or a CPU with native bf16, else float32")
    parser.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"], default=None,
                        help="auto (default): channels_last except where measured slower (LGAM under bf16 on a CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--data-root", default=None, help="where named datasets are (default $ATTNVIZ_DATA)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run OUT/NAME")
    parser.add_argument("--json-progress", action="store_true", help="one JSON object per event on stdout")
    parser.set_defaults(func=run)


def recipe_from_args(args):
    from attnviz.training import Recipe

    values = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "schedule": args.schedule, "optimizer": args.optimizer, "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "interflow_aux_weight": args.aux_weight,
        "interflow_weight_lr_scale": args.interflow_weight_lr_scale,
        "precision": args.precision, "memory_format": args.memory_format,
        "average_epochs": args.average_epochs, "average_lr": args.average_lr,
        "average_schedule": args.average_schedule,
    }
    recipe = Recipe(**{k: v for k, v in values.items() if v is not None})
    recipe.augment = not args.no_augment
    recipe.compile = bool(args.compile)
    recipe.validate()
    return recipe


class _JsonPrinter:
    def __call__(self, event: dict) -> None:
        try:
            sys.stdout.write(json.dumps(finite(event), allow_nan=False, default=str) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            pass  # the reader went away; training goes on and still writes its checkpoint


class _ProgressBar:
    """tqdm over all steps of the run; epoch results printed above the bar."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "start":
            total = event["epochs"] * event["steps_per_epoch"]
            done = 0
            if event.get("resumed_at"):
                done = event["resumed_at"][0] * event["steps_per_epoch"] + event["resumed_at"][1]
            tqdm.write(f"training {event['spec']} on {event['dataset']} ({event['n_train']} images, "
                       f"{event['params']:,} parameters) on {event['device']}", file=sys.stderr)
            self.bar = tqdm(total=total, initial=min(done, total), unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["global_step"] - self.bar.n)
            self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.3f}",
                                 acc=f"{event['train_acc']:.3f}", img_s=f"{event['images_per_s']:.0f}")
        elif kind == "epoch":
            dead = event["attention"].get("dead_fraction_total")
            dead_text = f", dead SE units {dead:.1%}" if dead is not None else ""
            message = (f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f}, "
                       f"train acc {event['train_acc']:.2%}, test acc {event['test_acc']:.2%}{dead_text}")
            (self.bar.write if self.bar else print)(message, file=sys.stderr)
        elif kind in ("end", "error"):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if kind == "end":
                print(f"test accuracy {event['test_acc']:.2%}; checkpoint {event['checkpoint']}", file=sys.stderr)


def run(args) -> int:
    from attnviz.errors import TrainingCancelled, TrainingDiverged, TrainingError
    from attnviz.training import train

    recipe = recipe_from_args(args)
    data = args.data
    if args.data_root:
        from attnviz.data import load_dataset

        data = load_dataset(args.data, data_root=args.data_root)
    rank = int(os.environ.get("RANK", "0"))
    quiet = rank != 0
    callback = None if quiet else (_JsonPrinter() if args.json_progress else _ProgressBar())

    cancel = threading.Event()
    previous = {}

    def request_cancel(signum, _frame):
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        cancel.set()
        if not quiet:
            sys.stderr.write("\ncancelling after the current step (Ctrl-C again to abort now)...\n")

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_cancel)
    try:
        train(args.model, data, recipe, out_dir=args.out, name=args.name, callback=callback,
              cancel_event=cancel, device=args.device, resume=args.resume)
        return 0
    except TrainingCancelled as err:
        if not quiet:
            sys.stderr.write(f"cancelled: {err}\n")
        return 130
    except TrainingDiverged as err:
        if not quiet:
            sys.stderr.write(f"error: {err}\n")
        return 3
    except TrainingError as err:
        if not quiet:
            sys.stderr.write(f"error: {err}\n")
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
