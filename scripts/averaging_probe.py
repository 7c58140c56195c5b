"""Does stochastic weight averaging lift a finished zoo checkpoint over issue 11's bar? (``Recipe.average_*``)

Continues a shipped checkpoint that finished the zoo's main schedule into the averaging phase
(``attnviz.training.averaging``: ``--average-epochs`` more epochs at ``--average-lr``, constant or in
one-epoch cycles, one snapshot per epoch, BatchNorm recomputed) and prints, per epoch, the SGD weights' test accuracy and the
running average's (a bf16 monitor), then the averaged model's final float32 accuracy on all test images.
Nothing is shipped: the result lands in ``--out``. One core is enough (``taskset -c 0``).

    .venv/bin/python scripts/averaging_probe.py checkpoints/resnet20.json \\
        --data imagefolder:../shared/datasets/cifar10-jpeg.tar.gz --average-epochs 15 --average-lr 0.05

``--bn-check`` instead recomputes the checkpoint's own BatchNorm statistics (every 5th training image,
float32) with and without the training augmentation and prints the test accuracy of each beside the
original: why ``recompute_batchnorm`` augments.
"""

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.checkpoints import load_checkpoint, read_card  # noqa: E402
from attnviz.data import load_dataset  # noqa: E402
from attnviz.training import Recipe, evaluate, train  # noqa: E402
from attnviz.training.averaging import recompute_batchnorm  # noqa: E402
from attnviz.training.state import continue_into_averaging, state_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("card", type=Path, help="a complete checkpoint card trained on the main schedule")
    parser.add_argument("--data", required=True, help="the dataset it was trained on (a dataset argument)")
    parser.add_argument("--average-epochs", type=int, default=15)
    parser.add_argument("--average-lr", type=float, default=0.05)
    parser.add_argument("--average-schedule", choices=["constant", "cyclic"], default="constant")
    parser.add_argument("--out", type=Path, default=Path("runs/averaging-probe"))
    parser.add_argument("--bn-check", action="store_true", help="only compare BatchNorm recomputations")
    args = parser.parse_args()
    if args.bn_check:
        return bn_check(args.card, args.data)
    card = read_card(args.card)
    recipe = dataclasses.replace(Recipe.from_dict(card["recipe"]), average_epochs=args.average_epochs,
                                 average_lr=args.average_lr, average_schedule=args.average_schedule)
    name = f"{card['name']}-avg{args.average_epochs}-lr{args.average_lr:g}"
    name += "-cyclic" if args.average_schedule == "cyclic" else ""
    args.out.mkdir(parents=True, exist_ok=True)
    if not state_path(args.out, name).exists() and not continue_into_averaging(args.card, state_path(args.out, name),
                                                                               recipe):
        print(f"error: {args.card} is not a complete main-schedule checkpoint to continue", file=sys.stderr)
        return 2

    def report(event):
        if event["event"] == "epoch":
            print(f"epoch {event['epoch']}/{event['epochs']}: SGD weights {event['test_acc']:.4f}, "
                  f"average {event.get('average_test_acc', float('nan')):.4f} ({event['time_s']:.0f} s)", flush=True)

    result = train(card["spec"], load_dataset(args.data), recipe, args.out, name, callback=report, resume=True)
    print(f"{card['name']}: main schedule {card['metrics']['test_acc']:.4f} -> averaged "
          f"{result.card['metrics']['test_acc']:.4f} (float32, {result.card['metrics']['n_test']} test images)")
    return 0


def bn_check(card_path: Path, data_name: str) -> int:
    model, card = load_checkpoint(card_path)
    data = load_dataset(data_name)

    def accuracy(net) -> float:
        return evaluate(net, data.test_images, data.test_labels, card["mean"], card["std"], device="cpu")["test_acc"]

    print(f"{card['name']}: original statistics {accuracy(model):.4f}")
    for augment in (False, True):
        recomputed = copy.deepcopy(model)
        recompute_batchnorm(recomputed, data.train_images[::5], card["mean"], card["std"], augment=augment)
        print(f"  recomputed on every 5th training image, {'with' if augment else 'without'} the training "
              f"augmentation: {accuracy(recomputed):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
