"""``checkpoints/README.md``: one table generated from the model cards in a folder."""

from __future__ import annotations

import json
from pathlib import Path

from attnviz.data import portable_dataset_name
from attnviz.training import Recipe
from attnviz.training.state import same_schedule
from attnviz.zoo.entries import DEFAULT_DATA, RETRAIN_COMMAND, ZOO, ZOO_RECIPE, accuracy_bar


def _schedule_text(recipe: Recipe) -> str:
    text = f"{recipe.epochs} epochs"
    if recipe.average_epochs:
        text += f" + {recipe.average_epochs} weight-averaging epochs at lr {recipe.resolved_average_lr:g}"
    return text


def _fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _read_cards(out: Path) -> list[dict]:
    from attnviz.checkpoints import read_card
    from attnviz.errors import CheckpointError

    order = {name: i for i, (name, _) in enumerate(ZOO)}
    cards = []
    for card_path in sorted(out.glob("*.json")):
        try:
            cards.append(read_card(card_path))
        except CheckpointError:
            continue
    return sorted(cards, key=lambda c: (order.get(c.get("name"), len(order)), str(c.get("name"))))


def _table_row(card: dict) -> str:
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
    precision_text = card.get("training_precision") or "not recorded"
    flops_text = f"{flops / 1e6:.1f}" if isinstance(flops, (int, float)) else "?"
    acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%{flag}"
    return (f"| {card.get('name')} | `{card.get('spec')}` | {_fmt_int(card.get('params'))} | {flops_text} | "
            f"{acc_text} | {100 * bar:g}% | {time_text} | {precision_text} | {epochs_text} | {card.get('status', '?')} |")


def _recipe_notes(cards: list[dict], data: str) -> list[str]:
    """Dataset, the shared recipe, where a card differs from it, what is not yet on the zoo recipe."""
    recipe = cards[0].get("recipe") if cards else json.loads(json.dumps(ZOO_RECIPE.to_dict()))
    lines = [
        "",
        f"Dataset: `{portable_dataset_name(str(cards[0].get('dataset') if cards else data))}` ({_fmt_int(cards[0].get('n_train') if cards else None)} "
        f"training and {_fmt_int((cards[0].get('metrics') or {}).get('n_test') if cards else None)} test images; the zoo "
        "uses CIFAR-10, Krizhevsky 2009, from its JPEG mirror).",
        "FLOPs: `torch.utils.flop_counter` on one 32x32 image (a multiply-add counts 2). `vgg16-interflow-soft` is",
        "VGG-16 at width multiplier 0.5 (see `attnviz/zoo/entries.py`).",
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
    earlier = [str(c.get("name")) for c in cards if not same_schedule(c.get("recipe"), ZOO_RECIPE)]
    if earlier:
        lines += [
            f"**Not yet on the zoo recipe.** {', '.join(earlier)} still "
            f"{'ships' if len(earlier) == 1 else 'ship'} an earlier recipe's "
            f"checkpoint (see its epochs above); the zoo recipe ({_schedule_text(ZOO_RECIPE)}) replaces "
            "each one as it finishes (its card records the training time and device).",
            "",
        ]
    missing = [name for name, _ in ZOO if name not in {c.get("name") for c in cards}]
    if missing:
        lines += [f"Not trained yet (the app lists them as untrained): {', '.join(missing)}.", ""]
    return lines


def write_readme(out_dir: str | Path, data: str = DEFAULT_DATA) -> Path:
    """Regenerate ``out_dir/README.md``: one table built from the cards found there."""
    from attnviz.checkpoints import atomic_write_bytes

    out = Path(out_dir)
    cards = _read_cards(out)
    lines = [
        "# Shipped checkpoints",
        "",
        "Generated by `attnviz.zoo.write_readme` from the model cards in this folder; every number below is",
        "copied from a card, and every card's `metrics` were measured by `attnviz eval` semantics (CPU, float32,",
        "the full test split of the card's dataset). Check one with `attnviz eval checkpoints/NAME.json`.",
        "",
        "| name | spec | params | MFLOPs | test acc | bar | train time (device) | training precision | epochs | status |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---|",
        *[_table_row(card) for card in cards],
        *_recipe_notes(cards, data),
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
