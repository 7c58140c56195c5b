"""Train the shipped zoo into checkpoints/ (resumable, unattended): see attnviz/zoo.py.

    python scripts/train_zoo.py --data imagefolder:../shared/datasets/cifar10-jpeg.tar.gz [--out checkpoints]
                                [--only resnet20-se ...] [--device cuda] [--epochs N] [--readme-only]

Run it again after an interruption: finished models are skipped and the interrupted one resumes from its
last epoch. README.md in the output folder is regenerated from the cards at the end (and on interruption).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.zoo import _main  # noqa: E402

if __name__ == "__main__":
    sys.exit(_main())
