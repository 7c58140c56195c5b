"""Golden outputs: a fixed batch from the shipped sample set and each shipped checkpoint's logits on it.

``scripts/make_golden.py`` stores the logits next to the tests (``tests/golden/NAME.json``) when a
checkpoint is (re)trained; ``tests/test_golden.py`` recomputes them, so a change to a module that
silently alters what shipped weights compute is caught. The batch is the first test image of every
class of ``sample`` (sorted file order), preprocessed with the checkpoint card's own mean/std,
evaluated in float32 on the CPU. Tolerance 1e-3 absolute on logits: enough for BLAS/oneDNN summation
order differences between machines, far below any real change (a changed module moves logits by
>= 0.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from attnviz.checkpoints import load_checkpoint
from attnviz.data import load_dataset, match_channels, preprocess

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
TOLERANCE = 1e-3


def golden_batch(card: dict) -> torch.Tensor:
    sample = load_dataset("sample")
    labels = sample.test_labels
    index = torch.stack([torch.nonzero(labels == k)[0, 0] for k in range(int(labels.max()) + 1)])
    images = match_channels(sample.test_images[index], int(card.get("in_chans", 3)))
    return preprocess(images, card["mean"], card["std"])


@torch.no_grad()
def golden_logits(model: torch.nn.Module, card: dict) -> torch.Tensor:
    model.eval()
    return model.float().cpu()(golden_batch(card))


def write_golden(card_path: str | Path, golden_dir: str | Path = GOLDEN_DIR) -> Path | None:
    """Store ``golden_dir/NAME.json`` for the checkpoint at ``card_path``; ``None`` if it is unfinished."""


    model, card = load_checkpoint(card_path)
    if card.get("status", "complete") != "complete":
        return None
    logits = golden_logits(model, card)
    out = {"name": card["name"], "weights_sha256": card["weights_sha256"], "logits": logits.tolist()}
    path = Path(golden_dir) / f"{card['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out) + "\n")
    return path
