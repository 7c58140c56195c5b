"""How large a ResNet-20's stage-3 output is at initialisation, per spec (LGAM's gain, issue 11).

Prints ``attnviz.stats.init_stage_std`` (train-mode BN, 64 random 32x32 pictures, seed 0) for the plain
network, LGAM as the paper defines it, LGAM with the channel mean of eq. (5), and the residual-BN
starts the zoo tried (zero-init; gamma 0.25). These are the numbers LGAM's docstring and the zoo note cite.

    .venv/bin/python scripts/init_scale_probe.py [--specs SPEC ...]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.stats import init_stage_std  # noqa: E402

SPECS = [
    "resnet20",
    "resnet20-lgam",
    "resnet20-lgam:ladder=false",
    "resnet20-lgam:spatial_reduce=mean",
    "resnet20-lgam:spatial_reduce=mean,zero_init_residual=true",
    "resnet20-lgam:residual_bn_gamma=0.25,spatial_reduce=mean",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", nargs="+", default=SPECS)
    args = parser.parse_args()
    plain = init_stage_std("resnet20")
    for spec in args.specs:
        std = init_stage_std(spec)
        print(f"{spec:60s} layer3 std {std:5.2f}  ({std / plain:4.2f}x plain)")


if __name__ == "__main__":
    main()
