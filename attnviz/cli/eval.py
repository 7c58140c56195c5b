"""``attnviz eval CHECKPOINT``: accuracy, per-class accuracy, loss and n on a dataset's test split.

The checkpoint's own preprocessing is used (its card's channels, mean and std), and the measurement is
:func:`attnviz.training.evaluate` on the CPU in float32 — the same call that wrote the card's metrics at
the end of training, so a card's ``metrics.test_acc`` is reproduced exactly. ``--data`` defaults to the
dataset named in the card.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    parser = sub.add_parser("eval", help="measure a checkpoint on a dataset's test split")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="NAME.json, NAME.safetensors or a shipped name")
    parser.add_argument("--data", default=None, metavar="DATASET", help="default: the dataset in the card")
    parser.add_argument("--device", default="cpu", help="cpu (default, what the cards use), cuda, mps")
    parser.add_argument("--data-root", default=None, help="where named datasets are (default $ATTNVIZ_DATA)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)


def evaluate_checkpoint(checkpoint, data=None, device="cpu", data_root=None) -> dict:
    """Load ``checkpoint`` and measure it on ``data``'s test split (default: the card's dataset)."""
    from attnviz.checkpoints import load_checkpoint
    from attnviz.data import load_dataset, match_channels
    from attnviz.device import pick_device
    from attnviz.errors import DatasetError
    from attnviz.training import evaluate

    model, card = load_checkpoint(checkpoint)
    name = data or card.get("dataset")
    if not name:
        raise DatasetError("The model card names no dataset; pass --data.")
    try:
        dataset = load_dataset(name, data_root=data_root) if isinstance(name, str) else name
    except DatasetError as err:
        if data is not None:
            raise
        raise DatasetError(f"The card's dataset ({name}) cannot be loaded here ({err}); pass --data, e.g. "
                           "--data imagefolder:PATH/cifar10-jpeg.tar.gz.") from err
    class_names = card.get("class_names") or []
    if dataset.num_classes != int(card["num_classes"]) or (class_names and class_names != dataset.class_names):
        raise DatasetError(
            f"{dataset.name} has classes {', '.join(dataset.class_names[:4])}... ({dataset.num_classes}) but the "
            f"checkpoint was trained on {card['num_classes']} classes "
            f"({', '.join(class_names[:4]) or 'unnamed'}...)."
        )
    in_chans = int(card.get("in_chans", 3))
    images = match_channels(dataset.test_images, in_chans)
    mean, std = card.get("mean"), card.get("std")
    if not mean or not std or len(mean) != in_chans:
        raise DatasetError("The model card has no usable mean/std for its input channels.")
    target = pick_device(device)
    metrics = evaluate(model.to(target), images, dataset.test_labels, mean, std,
                       num_classes=dataset.num_classes, device=target)
    metrics.update({"checkpoint": card.get("path"), "spec": card["spec"], "dataset": dataset.name,
                    "class_names": dataset.class_names, "device": str(target),
                    "card_test_acc": (card.get("metrics") or {}).get("test_acc")})
    return metrics


def run(args) -> int:
    result = evaluate_checkpoint(args.checkpoint, args.data, args.device, args.data_root)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"{result['spec']} on {result['dataset']} (test split, n={result['n_test']}, {result['device']})")
    print(f"accuracy {result['test_acc']:.2%} ({result['correct']}/{result['n_test']}), "
          f"loss {result['test_loss']:.4f}")
    if result["card_test_acc"] is not None:
        same = "matches" if result["card_test_acc"] == result["test_acc"] else "differs from"
        print(f"this {same} the model card's {result['card_test_acc']:.2%}")
    width = max(len(c) for c in result["class_names"])
    for class_name, acc in zip(result["class_names"], result["per_class_acc"], strict=True):
        print(f"  {class_name:<{width}}  {'n/a' if acc is None else f'{acc:.2%}'}")
    return 0
