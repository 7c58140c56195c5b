"""Study 4: which explanations are faithful? (the question behind LGAM fig. 5)

LGAM's fig. 5 shows Grad-CAM maps of networks with and without attention and reads better-looking
maps as better attention. Looks are not evidence; faithfulness metrics ask whether the pixels a map
ranks highest are the ones the model needs. For every CIFAR-10 checkpoint that
``attnviz.checkpoints.list_checkpoints()`` finds (shipped zoo, ``$ATTNVIZ_CHECKPOINTS``, the user's
runs), on a fixed subset of the CIFAR-10 test set (the first k test images of each class in stored
order; at the small budget the shipped sample's 500 test images), we score:

- maps: Grad-CAM, Grad-CAM++ (pytorch-grad-cam, last stage) and Saliency (captum, |gradient|), plus
  Integrated Gradients (captum, 32 steps, mean-colour baseline) at the full budget only — it costs
  about five times the other three together on a CPU (measured: 276 vs 54 CPU-seconds for Grad-CAM on
  500 images + 200 mosaics) — all through :func:`attnviz.analysis.explanations.explain`; the modules' own spatial
  masks where the model has them (:func:`attnviz.analysis.faithfulness.module_masks`, each site's mask min-max
  scaled per image, then averaged over sites: "module mask"); and two controls that know nothing about
  the model — ``random`` (uniform noise, seeded) and ``centre`` (a centred Gaussian, sigma = side/4,
  i.e. "objects in CIFAR are in the middle").
- deletion and insertion AUC (:func:`attnviz.analysis.faithfulness.deletion_insertion`, Petsiuk et al. 2018): the
  predicted class's probability as the most salient pixels are removed (mean colour; lower = more
  faithful) or inserted into a blurred copy (higher = more faithful), trapezoid rule over ``steps``
  equal steps. Each method is compared with Grad-CAM per image (paired difference, mean ± 2 standard
  errors), and with the random control.
- pointing game (Zhang et al., ECCV 2016) on a synthetic set where the object's location is known,
  in its grid form (as in Rao et al., "Towards better understanding attribution methods", CVPR 2022):
  each test image (the target) is placed in a random quadrant of a 2 x 2 mosaic (64 x 64) whose other
  three quadrants hold test images of three other, distinct classes (seeded choices); the map for the
  target's true class is computed on the mosaic, and a hit is its maximum falling inside the target's
  quadrant (no tolerance). Chance is 25%; the centre control's maximum (ties: first in raster order)
  sits in the top-left quadrant, so it also scores chance. We first pasted images onto a blank canvas,
  but then any content-sensitive map finds the object (Integrated Gradients' attribution is exactly 0
  wherever the input equals its baseline), which measures nothing; distractors fix that. The models
  never saw mosaics, so how often they still rank the target first among the four classes shown is
  reported beside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnviz.experiments.base import Progress, open_study

STUDY = "faithfulness"
TITLE = "Which explanations are faithful? Deletion, insertion and the pointing game"
QUESTION = (
    "For each zoo model, do Grad-CAM, Grad-CAM++, Saliency (and at the full budget Integrated Gradients) and "
    "the attention modules' own "
    "spatial masks rank pixels by what the model actually uses (deletion/insertion AUC against random and "
    "centre-prior controls), and do they point at the object when its location is known?"
)
METHODS = ("gradcam", "gradcam++", "saliency")
FULL_METHODS = METHODS + ("integrated_gradients",)
MASK = "module mask"
CONTROLS = ("random", "centre")
BATCH = 100


@dataclass(frozen=True)
class FaithfulnessBudget:
    test_per_class: int
    pointing_per_class: int
    steps: int
    max_models: int | None
    methods: tuple[str, ...] = METHODS

    def describe(self, data: str) -> dict:
        return {"data": data, "images (deletion/insertion)": self.test_per_class * 10,
                "images (pointing game)": self.pointing_per_class * 10, "steps per curve": self.steps,
                "methods": ", ".join(self.methods) + f", {MASK} (where present), controls: " + ", ".join(CONTROLS),
                "models": "all CIFAR-10 checkpoints found" if self.max_models is None else f"first {self.max_models}"}


BUDGETS = {
    "tiny": FaithfulnessBudget(test_per_class=2, pointing_per_class=1, steps=8, max_models=1),
    "small": FaithfulnessBudget(test_per_class=50, pointing_per_class=10, steps=8, max_models=None),
    "full": FaithfulnessBudget(test_per_class=100, pointing_per_class=100, steps=32, max_models=None,
                               methods=FULL_METHODS),
}


# ---------------------------------------------------------------------------------------------
# maps


def centre_prior(height: int, width: int) -> np.ndarray:
    rows = np.arange(height) - (height - 1) / 2
    cols = np.arange(width) - (width - 1) / 2
    sigma = min(height, width) / 4
    return np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


def control_maps(kind: str, batch: int, height: int, width: int, seed: int) -> np.ndarray:
    if kind == "random":
        return np.random.default_rng(seed).random((batch, height, width), dtype=np.float32)
    if kind == "centre":
        return np.repeat(centre_prior(height, width)[None], batch, axis=0)
    raise ValueError(kind)


def has_spatial_mask(model) -> bool:
    from attnviz.analysis.probes import attention_sites

    return any(m.spatial_mask_tap for m in attention_sites(model).values())


def maps_for(kind: str, model, x: torch.Tensor, targets, seed: int) -> np.ndarray:
    """[B, H, W] maps of ``kind`` for images ``x`` (preprocessed) and target classes ``targets``."""
    from attnviz.analysis.explanations import explain
    from attnviz.analysis.faithfulness import module_masks

    if kind in CONTROLS:
        return control_maps(kind, x.shape[0], x.shape[2], x.shape[3], seed)
    if kind == MASK:
        masks = module_masks(model, x, normalise=True)
        if not masks:
            raise ValueError("the model has no spatial attention mask")
        return np.mean(np.stack(list(masks.values())), axis=0).astype(np.float32)
    explanations = explain(model, x, target=[int(t) for t in targets], method=kind, branches=False)
    return np.stack([e.heatmap for e in explanations]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# data


def faithful_set(dataset, per_class: int):
    """The first ``per_class`` test images of each class (stored order): uint8 images and labels."""
    subset = dataset.subset(train_per_class=0, test_per_class=per_class)
    return subset.test_images, subset.test_labels


def pointing_set(images: torch.Tensor, labels: torch.Tensor, seed: int = 0):
    """2 x 2 mosaics of four images of four different classes (the grid pointing game).

    For each image i (the target) three others with distinct classes (different from i's and from each
    other) are drawn from the same pool with a seeded generator; the target goes to a random quadrant and
    the others fill the rest. ``images`` are preprocessed [N, C, h, w]. Returns (mosaics [N, C, 2h, 2w],
    target boxes (top, left, height, width), the four classes present per mosaic).
    """
    count, channels, height, width = images.shape
    rng = np.random.default_rng(seed)
    label_list = labels.tolist()
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(label_list):
        by_class.setdefault(label, []).append(index)
    if len(by_class) < 4:
        raise ValueError("the pointing game needs images of at least 4 classes")
    mosaics = torch.zeros(count, channels, 2 * height, 2 * width, dtype=images.dtype)
    boxes, present = [], []
    for i in range(count):
        others = [c for c in sorted(by_class) if c != label_list[i]]
        classes = [label_list[i]] + [int(c) for c in rng.choice(others, size=3, replace=False)]
        members = [i] + [int(rng.choice(by_class[c])) for c in classes[1:]]
        quadrants = rng.permutation(4)
        for member, quadrant in zip(members, quadrants, strict=True):
            top, left = (quadrant // 2) * height, (quadrant % 2) * width
            mosaics[i, :, top:top + height, left:left + width] = images[member]
        target_quadrant = int(quadrants[0])
        boxes.append(((target_quadrant // 2) * height, (target_quadrant % 2) * width, height, width))
        present.append(classes)
    return mosaics, boxes, present


# ---------------------------------------------------------------------------------------------
# one unit: one (model, map kind)


def evaluate_kind(model, card: dict, kind: str, images: torch.Tensor, labels: torch.Tensor,
                  point_images: torch.Tensor, point_labels: torch.Tensor, steps: int, seed: int = 0) -> dict:
    from attnviz.analysis.faithfulness import deletion_insertion
    from attnviz.data import preprocess
    from attnviz.experiments.metrics import pointing_hit

    mean, std = card["mean"], card["std"]
    deletion, insertion, predicted_all = [], [], []
    for start in range(0, images.shape[0], BATCH):
        x = preprocess(images[start:start + BATCH], mean, std)
        with torch.no_grad():
            predicted = model(x).argmax(dim=1).tolist()
        maps = maps_for(kind, model, x, predicted, seed + start)
        scores = deletion_insertion(model, x, maps, predicted, steps=steps)
        deletion += scores.deletion_auc.tolist()
        insertion += scores.insertion_auc.tolist()
        predicted_all += predicted
    mosaics, boxes, present = pointing_set(preprocess(point_images, mean, std), point_labels, seed=seed + 1)
    hits, target_first = [], []
    for start in range(0, mosaics.shape[0], BATCH):
        x = mosaics[start:start + BATCH]
        truth = point_labels[start:start + BATCH].tolist()
        with torch.no_grad():
            logits = model(x)
        for row, classes in zip(logits, present[start:start + BATCH], strict=True):
            target_first.append(bool(int(torch.argmax(row[classes])) == 0))  # target = classes[0]
        maps = maps_for(kind, model, x, truth, seed + 2 + start)
        hits += [pointing_hit(m, box) for m, box in zip(maps, boxes[start:start + BATCH], strict=True)]
    return {
        "deletion": [round(v, 5) for v in deletion], "insertion": [round(v, 5) for v in insertion],
        "accuracy": float(np.mean(np.asarray(predicted_all) == labels.numpy())),
        "pointing_hits": [bool(h) for h in hits], "mosaic_target_first": float(np.mean(target_first)),
    }


# ---------------------------------------------------------------------------------------------
# the study


def usable_checkpoints(dirs=None, notes: list[str] | None = None) -> list[dict]:
    """CIFAR-10-shaped checkpoints (10 classes, 3 x 32 x 32 inputs) from ``list_checkpoints``."""
    from attnviz.checkpoints import list_checkpoints, read_card

    found, skipped = [], []
    for entry in list_checkpoints(dirs):
        from pathlib import Path

        card = read_card(Path(entry["path"]))
        if card.get("num_classes") == 10 and card.get("in_chans") == 3 and list(card.get("input_size") or []) == [32, 32]:
            found.append(entry)
        else:
            skipped.append(entry["name"])
    if skipped and notes is not None:
        notes.append(f"Skipped (not a 10-class 32x32 RGB model): {', '.join(skipped)}.")
    return found


def studied_checkpoints(dirs, notes: list[str], max_models: int | None, budget: str) -> list[dict]:
    """:func:`usable_checkpoints`, cut to the budget's ``max_models``; each cut or absence is a note."""
    checkpoints = usable_checkpoints(dirs, notes)
    if max_models is not None and len(checkpoints) > max_models:
        notes.append(f"The {budget} budget evaluates only the first {max_models} of {len(checkpoints)} checkpoints.")
        checkpoints = checkpoints[:max_models]
    if not checkpoints:
        notes.append("No CIFAR-10 checkpoint was found (shipped checkpoints/, $ATTNVIZ_CHECKPOINTS, your runs): "
                     "nothing to evaluate. Train or install the zoo, then run this study again.")
    return checkpoints


def run(budget: str = "small", out_dir="reports", progress: Progress | None = None, *, checkpoint_dirs=None):
    from attnviz.checkpoints import load_checkpoint
    from attnviz.experiments.faithfulness_report import write_report  # it imports this module

    plan, study, dataset, data_label = open_study(STUDY, TITLE, BUDGETS, budget, out_dir, progress)
    progress = study.progress
    images, labels = faithful_set(dataset, plan.test_per_class)
    point_images, point_labels = faithful_set(dataset, plan.pointing_per_class)
    data_label = f"{data_label.split(':')[0]}: the first {plan.test_per_class} test images of each class"
    checkpoints = studied_checkpoints(checkpoint_dirs, study.notes, plan.max_models, budget)
    device = torch.device("cpu")
    work = []
    for entry in checkpoints:
        model, card = load_checkpoint(entry["path"], device=device)
        kinds = list(plan.methods) + ([MASK] if has_spatial_mask(model) else []) + list(CONTROLS)
        work.append((entry, model, card, kinds))
    total = sum(len(kinds) for *_, kinds in work)
    results: dict[str, dict] = {}
    done = 0
    for entry, model, card, kinds in work:
        for kind in kinds:
            key = f"{entry['name']}-{entry['sha256'][:12]}-{kind}"
            progress(done, total, f"{entry['name']}: {kind}")
            config = {"checkpoint": entry["name"], "sha256": entry["sha256"], "kind": kind, "steps": plan.steps,
                      "n": int(labels.numel()), "n_pointing": int(point_labels.numel()), "data": data_label,
                      "pointing": "2x2 mosaic"}
            result = study.units.run(key, config, lambda m=model, c=card, k=kind: evaluate_kind(
                m, c, k, images, labels, point_images, point_labels, plan.steps))
            results.setdefault(entry["name"], {"spec": card["spec"], "test_acc_card": card["metrics"]["test_acc"],
                                               "kinds": {}})["kinds"][kind] = result
            done += 1
    progress(done, total, "writing the report")
    return write_report(study, plan, data_label, results, device)


def _stats(values) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else float("nan")
    return float(array.mean()), se


def summarise(results: dict) -> dict:
    """Per model and map kind: mean AUCs, paired differences against Grad-CAM and random, pointing score."""
    out = {}
    for name, model_results in results.items():
        kinds = model_results["kinds"]
        rows = {}
        for kind, r in kinds.items():
            deletion, del_se = _stats(r["deletion"])
            insertion, ins_se = _stats(r["insertion"])
            row = {"deletion": deletion, "deletion_se": del_se, "insertion": insertion, "insertion_se": ins_se,
                   "pointing": float(np.mean(r["pointing_hits"])) if r["pointing_hits"] else None,
                   "n": len(r["deletion"]), "n_pointing": len(r["pointing_hits"])}
            for reference in ("gradcam", "random"):
                if reference in kinds and reference != kind:
                    ref = kinds[reference]
                    for metric in ("deletion", "insertion"):
                        diff = np.asarray(r[metric]) - np.asarray(ref[metric])
                        mean, se = _stats(diff)
                        better = (mean < 0) if metric == "deletion" else (mean > 0)
                        row[f"{metric}_vs_{reference}"] = {
                            "mean_diff": mean, "se": se,
                            "separated": bool(not np.isnan(se) and abs(mean) > 2 * se),
                            "better": bool(better)}
            rows[kind] = row
        any_kind = next(iter(kinds.values()))
        out[name] = {"spec": model_results["spec"], "accuracy": any_kind["accuracy"],
                     "mosaic_target_first": any_kind["mosaic_target_first"], "kinds": rows}
    return out
