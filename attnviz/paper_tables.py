"""Figures transcribed from the papers' tables, for side-by-side display with what we measure.

Only numbers printed in ``../shared/papers`` are here; every one names its table.
"""

from __future__ import annotations

# LGAM paper (Zhang, Li & Yang 2020): parameters in millions, keyed by (spec, num_classes).
LGAM_PARAMS_M: dict[tuple[str, int], tuple[float, str]] = {
    # table 1 (CIFAR-100)
    ("resnet18", 100): (11.22, "LGAM table 1/3"),
    ("resnet18-lgam", 100): (11.25, "LGAM table 1/3"),
    ("resnet34", 100): (21.33, "LGAM table 1"),
    ("resnet34-lgam", 100): (21.39, "LGAM table 1"),
    ("wrn16_10", 100): (17.43, "LGAM table 1"),
    ("wrn16_10-lgam", 100): (17.48, "LGAM table 1"),
    ("resnext29_32x4d", 100): (24.26, "LGAM table 1"),
    ("resnext29_32x4d-lgam", 100): (24.34, "LGAM table 1"),
    # table 3 (CIFAR-10 / CIFAR-100)
    ("resnet18", 10): (11.17, "LGAM table 3"),
    ("resnet18-se", 10): (11.26, "LGAM table 3"),
    ("resnet18-sge", 10): (11.17, "LGAM table 3"),
    ("resnet18-cbam", 10): (11.26, "LGAM table 3"),
    ("resnet18-bam", 10): (11.24, "LGAM table 3"),
    ("resnet18-lgam", 10): (11.20, "LGAM table 3"),
    ("resnet18-se", 100): (11.31, "LGAM table 3"),
    ("resnet18-sge", 100): (11.22, "LGAM table 3"),
    ("resnet18-cbam", 100): (11.31, "LGAM table 3"),
    ("resnet18-bam", 100): (11.29, "LGAM table 3"),
}

# LGAM table 4 (ImageNet, 20-class subset, ImageNet-style ResNet-18): not comparable to CIFAR layouts.
LGAM_TABLE4_IMAGENET20_PARAMS_M = {"none": 11.19, "se": 11.27, "sge": 11.19, "cbam": 11.27, "bam": 11.25, "lgam": 11.22}

# LGAM table 3: top-1 error (%) of ResNet-18 + module, CIFAR-10 / CIFAR-100.
LGAM_TABLE3_ERROR = {
    "none": (5.68, 23.52), "se": (5.54, 23.32), "sge": (5.33, 23.35),
    "cbam": (5.41, 23.23), "bam": (5.25, 23.21), "lgam": (5.16, 22.94),
}

# FeLU paper tables 1-2: metrics A-D (validation accuracy %, MNIST, 5 runs) per excitation activation.
FELU_TABLE1_NORMALISED = {
    "softplus": (97.63, 97.76, 97.68, 97.89), "sigmoid": (97.53, 97.61, 97.60, 97.76),
    "softsign": (97.37, 97.46, 97.48, 97.60), "relu": (97.42, 97.54, 97.52, 97.77),
    "leaky_relu": (97.36, 97.55, 97.97, 97.73), "felu": (97.89, 98.01, 97.92, 98.16),
}
FELU_TABLE2_STANDARDISED = {
    "softplus": (97.16, 97.61, 97.34, 97.78), "sigmoid": (97.33, 97.44, 97.46, 97.63),
    "softsign": (97.43, 97.50, 97.55, 97.66), "relu": (97.12, 97.45, 97.37, 97.73),
    "leaky_relu": (97.31, 97.35, 97.97, 97.52), "felu": (97.77, 97.91, 97.88, 98.10),
}
# FeLU table 3: CIFAR-10 / CIFAR-100 test error (%); table 4: train / test time (s).
FELU_TABLE3_ERROR = {"SENet": (4.46, 17.67), "ResNet + SE-FeLU (paper)": (3.24, 16.17)}
FELU_TABLE4_TIME_S = {"SENet": (10924, 97, 11021, 98), "ResNet + SE-FeLU (paper)": (13730, 113, 14500, 114)}

# ECA paper (Wang et al. 2020), ResNet-50 throughput relative to the plain network (train, inference).
ECA_RESNET50_SPEED_RATIO = {"se": (0.74, 0.87), "cbam": (0.46, 0.65), "eca": (0.77, 0.97)}


def paper_params(spec: str, num_classes: int) -> tuple[float, str] | None:
    return LGAM_PARAMS_M.get((spec, num_classes))

# Why some of our measured counts differ from the paper's figure by more than 0.02 M.
PARAM_NOTES = {
    "resnet18-bam": (
        "BAM is placed at the bottlenecks (after stages 1-3, the BAM paper's placement): +0.023 M. "
        "With one BAM after each of the 4 stages (LGAM table 2's AM rows, spec resnet18-bam@stage "
        "with all stages) it would be +0.091 M; the paper's +0.07 M matches neither, and the paper does "
        "not state its BAM reduction or placement."
    ),
    "wrn16_10": (
        "Our WRN-16-10 has 17.17 M parameters, the count Zagoruyko & Komodakis report (17.2 M); the "
        "paper's 17.43 M is 0.26 M higher, which no standard variant explains (the LGAM increment, "
        "+0.04 M here vs +0.05 M there, agrees)."
    ),
    "resnext29_32x4d": (
        "ResNeXt-29 with cardinality 32 and bottleneck width 4 has 4.9 M parameters with the CIFAR "
        "template of Xie et al.; the paper's 24.26 M matches no 32x4d layout (ResNeXt-29 8x64d has "
        "34.4 M), so its network must have been wider than its name says."
    ),
}
