"""The shipped zoo (issue 5): which models, one shared recipe, and the resumable ``train_all``.

The package: :mod:`~attnviz.zoo.entries` (this text: the entries, the recipe, the bars),
:mod:`~attnviz.zoo.training` (``train_all``, ``ship``, the lanes and ``scripts/train_zoo.py``'s entry
point), :mod:`~attnviz.zoo.readme` (``checkpoints/README.md`` from the cards).

Every entry is trained on the full CIFAR-10 training set (50,000 images, read with ``imagefolder:``
from the JPEG tarball) and evaluated on the full 10,000-image test set with the same recipe, so the
variants are comparable:

- ResNet-20 (He et al. 2016, 16-32-64 widths) with no attention, SE, SE-FeLU, LGAM, CBAM, BAM, SGE, ECA
  at their documented defaults (SE hidden width as in the core issue);
- Interflow on ResNet-20's 3 stages, ``soft`` and ``per_class``;
- Interflow (``soft``) on VGG-16 cut into 4 stages, at width multiplier 0.5 (every conv has half the
  paper's channels, 32..256, so it trains on a CPU in reasonable time); ``vgg16-interflow-soft`` at the
  full width remains available to anyone with a GPU: ``attnviz train --model vgg16-interflow-soft``.

Shared recipe (:data:`ZOO_RECIPE`, issue 11): 100 epochs, batch 128, SGD with Nesterov momentum 0.9,
one-cycle schedule rising from lr/25 to 0.2 over the first 20% of the steps then falling linearly to 0,
weight decay 5e-4 on weights (not BN/bias), label smoothing 0.1, random crop (pad 4) + flip, seed 0,
``precision="auto"`` (bf16 autocast where the CPU has native bf16 kernels or on CUDA; float32 on a CPU
without them, where emulated bf16 is far slower: ``benchmarks/trainer_throughput.py`` times both) and
``memory_format="auto"`` (channels_last, except LGAM, CBAM and SGE under bf16 on a CPU). Interflow's learned aggregation weights train at 0.1 x the lr with no weight decay
(``interflow_weight_lr_scale``: at the full lr they collapsed towards 0 within the first epoch and the
network stalled at 18.5%). Batch 128 rather than 256: on the 2-core AVX2 build machine a ResNet-20
step was faster per image at 128 (compare the "bare step" lines of ``benchmarks/trainer_throughput.py
--batch-size 128`` and ``--batch-size 256``), and it takes twice the steps per epoch. Issue 11's bars (:func:`accuracy_bar`): 88.5% for every ResNet-20 variant, 88% for Interflow on
ResNet-20, 89% for VGG-16 Interflow; a variant that falls short keeps its honest number in its card and
is flagged in the README table rather than tuned alone.

100 epochs rather than 50: at 50 the plain ResNet-20 reached 88.10% (SE 88.19%, SE-FeLU 88.25%, LGAM
87.19%), under the 88.5% bar; the same recipe at 100 epochs reached 88.50% (its card).

No weight-averaging phase (``Recipe.average_epochs = 0``): continuing the finished ``resnet20`` into
stochastic weight averaging (``scripts/averaging_probe.py --average-schedule cyclic``: one-epoch cycles
from lr 0.05 for 5 snapshots, from 0.02 for 3) left its test accuracy (the bf16 monitor) within 0.1 point
of where it was, while each snapshot costs an epoch. The trainer keeps the phase for anyone who wants it (``attnviz train --average-epochs``);
``train_all`` would continue shipped main-schedule checkpoints into it if the recipe asked.

``train_all`` skips entries whose card (staged, or shipped with ``ship_to``) says ``complete`` for the
same dataset and schedule, resumes interrupted ones from their ``.trainstate`` (or the handed-off one),
keeps going when one entry fails (its error is listed), and regenerates ``README.md`` from the cards.
"""

from __future__ import annotations

from pathlib import Path

from attnviz.training import Recipe

DEFAULT_DATA = "imagefolder:../shared/datasets/cifar10-jpeg.tar.gz"


ZOO: list[tuple[str, str]] = [
    ("resnet20", "resnet20"),
    ("resnet20-se", "resnet20-se"),
    ("resnet20-se-felu", "resnet20-se-felu"),
    ("resnet20-lgam", "resnet20-lgam:residual_bn_gamma=0.25,spatial_reduce=mean"),
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
        "LGAM as the paper defines it (eqs. 1-7) with two documented changes. (1) The last BatchNorm of every "
        "residual branch starts at gamma = 0.25 instead of 1 (residual_bn_gamma=0.25). Cause: each group's F_chan "
        "multiplies its input by 1.5-2 and the ladder of eq. (4) compounds that, so at the usual initialisation "
        "the stage outputs are ~5x larger (std 5.9 vs 1.2) and 2 of 3 small-budget runs stalled near chance; at "
        "gamma 0.25 the stage outputs start near the plain network's scale (std 1.05; scripts/init_scale_probe.py) and 0 of 3 stalled "
        "(reports/modules: lgam-mean-gamma). An earlier shipped run started that BN at 0 (zero_init_residual, "
        "Goyal et al. 2017), which also stops the stalls but starts every block as the identity and slows the "
        "start (the plain network with zero-init: 63.93% vs 55.87% small-budget error); it reached 88.19% at 100 "
        "epochs. (2) The spatial attention of eq. (5) pools the channels with a mean instead of a sum "
        "(spatial_reduce=mean). Cause: a sum over C channels drives the spatial sigmoid into saturation, so the "
        "maps are binary (exactly 0.5 or 1); with the mean and gamma 0.25 the small-budget error is 60.73 ± 0.50% "
        "(3 seeds; sum and gamma 0.25: 62.33 ± 0.76%) and the saturated share of spatial-gate values is 31% "
        "(sum: 83%). The paper-literal module stays available as the spec resnet20-lgam."
    ),
    "resnet20-sge": (
        "SGE with at least 4 channels per group (min_group_channels=4: G = 4, 8, 16 on ResNet-20's 16, 32, "
        "64 channels). Cause: the paper's G = 64 was chosen for 256-2048 channels; on 16-64 channels it "
        "leaves one channel per group, whose normalised similarity map divides by a near-zero spatial std "
        "(reports/modules: sge vs sge-4ch). The paper's G = 64 stays available as the spec resnet20-sge."
    ),
}


ZOO_RECIPE = Recipe(epochs=100, batch_size=128, lr=0.2, optimizer="nesterov", momentum=0.9, schedule="onecycle",
                    warmup_fraction=0.2, weight_decay=5e-4, label_smoothing=0.1, seed=0,
                    precision="auto", memory_format="auto")


RETRAIN_COMMAND = (f"python scripts/train_zoo.py --data {DEFAULT_DATA} --out runs/zoo --ship-to checkpoints"
                   " --handoff checkpoints/training-state")


def accuracy_bar(spec: str) -> float:
    """Issue 11's bars: 88.5% for the ResNet-20 variants, 88% for Interflow on ResNet-20, 89% for VGG-16."""
    if spec.startswith("vgg"):
        return 0.89
    return 0.88 if "interflow" in spec else 0.885


def standing(source: str, spec: str, epochs: float | None, test_acc: float | None) -> str:
    """How a shipped model stands against the zoo's recipe and bar, in a few words ('' for other rows).

    A checkpoint trained for fewer epochs than :data:`ZOO_RECIPE` is on an earlier recipe (still being
    retrained); one on the recipe meets :func:`accuracy_bar` or is below it.
    """
    if source != "shipped" or epochs is None or test_acc is None:
        return ""
    bar = accuracy_bar(spec)
    if epochs < ZOO_RECIPE.epochs:
        return f"earlier {epochs:g}-epoch recipe"
    return f"meets the {100 * bar:g}% bar" if test_acc >= bar else f"below the {100 * bar:g}% bar"


def default_out_dir() -> Path:
    from attnviz.paths import SHIPPED_DIR

    return SHIPPED_DIR
