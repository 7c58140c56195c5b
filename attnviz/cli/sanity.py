"""``attnviz sanity``: the model-parameter randomisation test (Adebayo et al. 2018) for one model.

    attnviz sanity --model CHECKPOINT_OR_SPEC (IMAGE... | --sample N) [--methods gradcam,saliency,...]
                   [--mode cascading|independent] [--granularity stage|block] [--seed 0] [--out DIR] [--json]

Re-initialises the model (a private copy) from the logits down (``cascading``) or one part at a time
(``independent``) and prints, per method and step, how similar the maps stay to the trained model's
(Spearman rank correlation of the map and of |map|, SSIM of the heat maps) and, per attention site, the
rank correlation of its readouts; then one line saying which methods pass. ``--sample N`` takes the
first N pictures (a spread of classes) of the shipped sample's test split instead of files. ``--out``
writes one PNG strip per method and picture (trained map on the left, fully random on the right).
Exit status: 0 done; 2 bad arguments, an unreadable image or a method that does not apply (one
``error:`` line, nothing else printed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from attnviz.cli import output_folder
from attnviz.errors import AttnvizError


def register(sub) -> None:
    from attnviz.analysis.sanity import DEFAULT_METHODS, GRANULARITIES, MODES

    parser = sub.add_parser("sanity", help="does a map change when the model's weights are randomised?")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files (or use --sample N)")
    parser.add_argument("--model", required=True, metavar="CHECKPOINT_OR_SPEC",
                        help="a checkpoint (.json/.safetensors path or name) or a model spec")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="use N pictures of the shipped sample test split (one per class first)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated explanation methods (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--mode", choices=MODES, default="cascading", help="cascading (default) or independent")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="stage",
                        help="randomise stage by stage (default) or block by block")
    parser.add_argument("--seed", type=int, default=0, help="seed of the re-initialisation (default 0)")
    parser.add_argument("--layer", default=None, help="layer for CAMs (default: the model's last stage)")
    parser.add_argument("--out", default=None, metavar="DIR", help="write PNG strips of the maps to DIR")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--json", action="store_true", help="print one JSON document (the summary)")
    parser.set_defaults(func=run)


def _sample_pictures(count: int):
    from attnviz.data import load_dataset

    if count < 1:
        raise AttnvizError("--sample needs at least 1 picture")
    data = load_dataset("sample")
    per_class = -(-count // data.num_classes)
    subset = data.subset(train_per_class=0, test_per_class=per_class)
    # one of each class first, then the second of each class, ...
    order = sorted(range(subset.n_test), key=lambda i: (int((subset.test_labels[:i] == subset.test_labels[i]).sum()),
                                                        int(subset.test_labels[i])))[:count]
    images = subset.test_images[order]
    names = [f"sample-test-{data.class_names[int(subset.test_labels[i])]}-{n}" for n, i in enumerate(order)]
    return images, names


def _inputs(args, card: dict, device):
    import torch

    from attnviz.data import preprocess as preprocess_uint8
    from attnviz.images import preprocess, read_image

    if args.sample is not None and args.images:
        raise AttnvizError("give image files or --sample N, not both")
    if args.sample is None and not args.images:
        raise AttnvizError("give at least one image file, or --sample N")
    if args.sample is not None:
        if list(card.get("input_size") or [32, 32]) != [32, 32] or int(card.get("in_chans", 3)) != 3:
            raise AttnvizError("--sample needs a model for 32x32 colour pictures (the sample set is CIFAR-10)")
        images, names = _sample_pictures(args.sample)
        x = preprocess_uint8(images, card["mean"], card["std"])
        return x.to(device), names, [None] * len(names)
    pictures, names = [], []
    for path in args.images:
        try:
            loaded = read_image(path)
        except AttnvizError as err:
            raise AttnvizError(f"{path}: {err}") from err
        pictures.append(loaded.image)
        names.append(Path(path).stem)
    return torch.cat([preprocess(p, card) for p in pictures]).to(device), names, pictures


def _strip_png(path: Path, labels: list[str], maps: list, picture) -> None:
    from attnviz.experiments.base import new_figure

    figure = new_figure(1.3 * (len(maps) + (picture is not None)), 1.6)
    axes = figure.subplots(1, len(maps) + (picture is not None))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    if picture is not None:
        axes[0].imshow(picture)
        axes[0].set_title("picture", fontsize=7)
        axes = axes[1:]
    for ax, label, heat in zip(axes, labels, maps, strict=True):
        ax.imshow(heat, cmap="jet", vmin=0, vmax=1)
        ax.set_title(label, fontsize=7)
    for ax in figure.axes:
        ax.set_axis_off()
    figure.savefig(path, format="png")


def run(args) -> int:
    from attnviz.analysis.explanations import canonical_method
    from attnviz.analysis.sanity import METRICS, describe, randomisation_test
    from attnviz.checkpoints import load_checkpoint
    from attnviz.cli.inspect import _load_one
    from attnviz.device import pick_device

    methods = [canonical_method(m) for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise AttnvizError("--methods names no method")
    device = pick_device(args.device)
    name, model, card = _load_one(args.model, device, load_checkpoint)
    model.eval()
    model.requires_grad_(False)
    x, names, pictures = _inputs(args, card, device)
    out_dir = output_folder(args.out)
    result = randomisation_test(model, x, methods=methods, mode=args.mode, granularity=args.granularity,
                                seed=args.seed, layer=args.layer)
    summary = result.summary()
    summary.update({"model": name, "checkpoint": card.get("path"), "weights_sha256": card.get("weights_sha256"),
                    "untrained": bool(card.get("untrained")), "images": names, "reading": describe(result)})
    written = []
    if out_dir is not None:
        for method in result.methods:
            for i, image_name in enumerate(names):
                path = out_dir / f"{image_name}__{method}__{args.mode}.png"
                _strip_png(path, result.labels, [step.heatmaps[method][i] for step in result.steps], pictures[i])
                written.append(str(path))
    summary["pngs"] = written
    if args.json:
        from attnviz.jsonutil import finite

        json.dump(finite(summary), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    flag = " (untrained: random weights)" if card.get("untrained") else ""
    print(f"{name}{flag}: {args.mode} randomisation by {args.granularity}, seed {args.seed}, {len(names)} picture(s)")
    print(f"steps: {' -> '.join(result.labels)}")
    for method in result.methods:
        print(f"  {method}:")
        for metric in METRICS:
            values = " ".join(f"{v:6.3f}" for v in result.curve(method, metric))
            print(f"    {metric:<13}{values}")
    keys = result.readout_keys()
    if keys:
        print("  attention readouts (rank correlation with the trained model's, mean over pictures):")
        for key in keys:
            print(f"    {key:<28}" + " ".join(f"{v:6.3f}" for v in result.readout_curve(key)))
    for path in written:
        print(f"  wrote {path}")
    print(describe(result))
    return 0
