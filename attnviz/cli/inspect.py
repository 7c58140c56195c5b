"""``attnviz inspect IMAGE... [--model SPEC_OR_CHECKPOINT ... | --all] [--method gradcam] [--target K]
[--out DIR] [--json]``: predictions, attention-site summaries and CAM overlays for images.

For each image and model: the top-k predictions, one line per attention site (SE/ECA/CBAM channel
weights, LGAM map statistics and A'/A'' norms, BAM/SGE masks, Interflow branch weights and branch
predictions) and, with ``--out``, PNG overlays of the CAM on the full-resolution image (plus one per
Interflow branch). ``--json`` prints one JSON document instead of text.

Models: ``--model`` takes a checkpoint (a ``.json``/``.safetensors`` path or a checkpoint name) or a
model spec (random, untrained weights, CIFAR-10 preprocessing; said in the output). ``--all`` (the
default when no ``--model`` is given) uses every checkpoint ``attnviz zoo`` lists.

A bad image prints ``error: <file>: <reason>`` on stderr and the others are still processed; the exit
status is then 2 (0 when every image was inspected).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from attnviz.cli import output_folder
from attnviz.errors import AttnvizError, CheckpointError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_CARD = {
    "input_size": [32, 32], "in_chans": 3, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616],
}


def register(sub) -> None:
    from attnviz.analysis.explanations import METHODS

    parser = sub.add_parser("inspect", help="predictions, attention summaries and CAMs for images")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", action="append", metavar="SPEC_OR_CHECKPOINT",
                       help="a checkpoint (.json/.safetensors path or name) or a model spec; repeatable")
    group.add_argument("--all", action="store_true", help="every checkpoint found (the default)")
    parser.add_argument("--method", default="gradcam", help=f"one of {', '.join(METHODS)} (default gradcam)")
    parser.add_argument("--target", default=None,
                        help="class index or class name to explain (default: each model's prediction)")
    parser.add_argument("--layer", default=None, help="layer for CAMs (default: the model's last stage)")
    parser.add_argument("--topk", type=int, default=3, help="how many predictions to list (default 3)")
    parser.add_argument("--out", default=None, metavar="DIR", help="write CAM overlay PNGs to DIR")
    parser.add_argument("--colormap", default="jet", help="matplotlib colour map for the overlays")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "model"


def _load_models(args, device) -> list[tuple[str, object, dict]]:
    """(name, model, card) per requested model; eval mode, gradients off."""
    from attnviz.checkpoints import list_checkpoints, load_checkpoint

    models = []
    if not args.model:
        entries = list_checkpoints()
        if not entries:
            raise AttnvizError("no checkpoints were found; name a model with --model SPEC_OR_CHECKPOINT")
        for entry in entries:
            model, card = load_checkpoint(entry["path"], device=device)
            models.append((str(card.get("name") or entry["name"]), model, card))
    else:
        for ref in args.model:
            models.append(_load_one(ref, device, load_checkpoint))
    for _, model, _ in models:
        model.eval()
        model.requires_grad_(False)
    return models


def _load_one(ref: str, device, load_checkpoint) -> tuple[str, object, dict]:
    path = Path(ref).expanduser()
    looks_like_file = path.suffix in (".json", ".safetensors") or path.exists() or "/" in ref
    if looks_like_file:
        model, card = load_checkpoint(path, device=device)
        return str(card.get("name") or path.stem), model, card
    try:
        model, card = load_checkpoint(ref, device=device)  # a checkpoint name
        return str(card.get("name") or ref), model, card
    except CheckpointError as checkpoint_err:
        import torch

        from attnviz.models.registry import create_model

        try:
            torch.manual_seed(0)
            model = create_model(ref)
        except AttnvizError as spec_err:
            raise AttnvizError(f"'{ref}' is neither a checkpoint ({checkpoint_err}) nor a model spec ({spec_err})") from spec_err
        card = dict(CIFAR10_CARD, name=ref, spec=model.spec, num_classes=model.num_classes, untrained=True)
        if model.num_classes == len(CIFAR10_CLASSES):
            card["class_names"] = list(CIFAR10_CLASSES)
        return ref, model.to(device), card


def _class_name(card: dict, index: int) -> str:
    names = card.get("class_names") or []
    return str(names[index]) if 0 <= index < len(names) else str(index)


def _resolve_target(target: str | None, card: dict, num_classes: int):
    if target is None:
        return "predicted"
    names = [str(n) for n in (card.get("class_names") or [])]
    if target in names:
        return names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise AttnvizError(f"--target '{target}' is not a class index or one of the class names") from None
    if not 0 <= index < num_classes:
        raise AttnvizError(f"--target {index} is out of range; the model has classes 0..{num_classes - 1}")
    return index


def _describe_site(summary: dict) -> str:
    """One short line per attention site."""

    def stats(key: str) -> str:
        s = summary[key]
        return f"mean {s['mean']:.3f} min {s['min']:.3f} max {s['max']:.3f}"

    parts = [f"{summary['site']} [{summary['kind']}]"]
    if "channel_weights" in summary:
        parts.append(f"channel weights {stats('channel_weights')}")
    if "hidden_units" in summary:
        parts.append(f"hidden units {summary['hidden_units']} (<= 0 on this image: {summary['dead_hidden_units']})")
    if "group_channel_weights" in summary:
        parts.append(f"{summary['groups']} groups, channel weights {stats('group_channel_weights')}")
    if "channel_logits" in summary:
        parts.append(f"channel logits {stats('channel_logits')}")
    if "spatial" in summary:
        shape = "x".join(str(v) for v in summary["spatial"]["shape"])
        parts.append(f"spatial map {shape} {stats('spatial')}")
    if "a_prime_norm" in summary:
        parts.append(f"|A| {summary.get('input_norm', float('nan')):.1f} |A'| {summary['a_prime_norm']:.1f} "
                     f"|A''| {summary['a_double_prime_norm']:.1f}")
    if "branch_weights" in summary:
        weights = summary["branch_weights"]
        if weights and isinstance(weights[0], list):  # per_class: [n, K]; show each branch's mean over classes
            text = " ".join(f"{sum(row) / len(row):.3f}" for row in weights) + " (mean over classes)"
        else:
            text = " ".join(f"{w:.3f}" for w in weights)
        predicted = ", ".join(str(c) for c in summary["branch_predictions"][0])
        parts.append(f"{summary['mode']} branch weights {text}; branch predictions {predicted}")
    return ": ".join(parts[:1]) + " " + ", ".join(parts[1:])


def _inspect_one(args, method: str, image_path: str, image, name: str, model, card: dict, out_dir: Path | None) -> dict:
    """One model on one picture (`attnviz.analysis.inspection.inspect_picture`), with its overlays written to ``out_dir``."""
    from attnviz.analysis.inspection import heat_map_png, inspect_picture

    num_classes = int(getattr(model, "num_classes", 0) or card.get("num_classes") or 0)
    target = _resolve_target(args.target, card, num_classes)
    inspection = inspect_picture(model, card, image, method=method, target=target, layer=args.layer,
                                 branches=True, name=name)
    predictions = [{"class": i, "name": _class_name(card, i), "prob": p} for i, p in inspection.top(args.topk)]
    cams = []
    for explanation in inspection.maps:
        png_path = None
        if out_dir is not None:
            suffix = "" if explanation.branch is None else f"__branch{explanation.branch + 1}"
            png_path = out_dir / f"{_safe_name(Path(image_path).stem)}__{_safe_name(name)}__{method}{suffix}.png"
            png_path.write_bytes(heat_map_png(image, explanation.heatmap, colormap=args.colormap, canvas=None))
        cams.append({"branch": explanation.branch, "layer": explanation.layer,
                     "target": explanation.target, "target_name": _class_name(card, explanation.target),
                     "png": str(png_path) if png_path else None})
    return {"model": name, "predictions": predictions, "cams": cams, "attention": inspection.sites}


def _print_result(result: dict, card: dict, method: str) -> None:
    flag = " (untrained)" if card.get("untrained") else ""
    predictions = result["predictions"]
    print(f"  {result['model']}{flag}:")
    print("    top-{}: {}".format(len(predictions), ", ".join(f"{p['name']} {100 * p['prob']:.1f}%" for p in predictions)))
    for summary in result["attention"]:
        print(f"    {_describe_site(summary)}")
    for cam in result["cams"]:
        where = f" -> {cam['png']}" if cam["png"] else ""
        which = "" if cam["branch"] is None else f" branch {cam['branch'] + 1}"
        print(f"    {method}{which} at {cam['layer'] or 'input'} for '{cam['target_name']}'{where}")


def run(args) -> int:
    from attnviz.analysis.explanations import canonical_method
    from attnviz.device import pick_device
    from attnviz.images import read_image

    method = canonical_method(args.method)
    if args.topk < 1:
        raise AttnvizError("--topk must be at least 1")
    device = pick_device(args.device)
    models = _load_models(args, device)
    out_dir = output_folder(args.out)

    failures = 0
    report = {"method": method, "models": [], "images": [], "errors": []}
    for name, model, card in models:
        report["models"].append({"name": name, "spec": getattr(model, "spec", card.get("spec")),
                                 "checkpoint": card.get("path"), "weights_sha256": card.get("weights_sha256"),
                                 "untrained": bool(card.get("untrained"))})
        if card.get("untrained") and not args.json:
            sys.stderr.write(f"note: {name} has random, untrained weights; its outputs mean nothing\n")
    for image_path in args.images:
        try:
            loaded = read_image(image_path)
        except AttnvizError as err:
            sys.stderr.write(f"error: {image_path}: {err}\n")
            report["errors"].append({"file": image_path, "error": str(err)})
            failures += 1
            continue
        entry = {"file": image_path, "size": list(loaded.image.size), "notes": loaded.notes, "models": []}
        if not args.json:
            print(f"{image_path} ({loaded.image.size[0]}x{loaded.image.size[1]} {loaded.format})")
            for note in loaded.notes:
                print(f"  note: {note}")
        for name, model, card in models:
            result = _inspect_one(args, method, image_path, loaded.image, name, model, card, out_dir)
            entry["models"].append(result)
            if not args.json:
                _print_result(result, card, method)
        report["images"].append(entry)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 2 if failures else 0
