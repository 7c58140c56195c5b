"""Every shipped checkpoint still computes the logits stored when it was trained (attnviz/golden.py)."""

import json
from pathlib import Path

import pytest
import torch

from attnviz.checkpoints import list_checkpoints, load_checkpoint
from attnviz.golden import GOLDEN_DIR, TOLERANCE, golden_logits
from attnviz.paths import SHIPPED_DIR

# a run still in progress (its card says so) is not a shipped result yet
SHIPPED = [r for r in list_checkpoints([SHIPPED_DIR])
           if json.loads(Path(r["path"]).read_text()).get("status", "complete") == "complete"]


def test_every_shipped_checkpoint_has_golden_logits():
    missing = [r["name"] for r in SHIPPED if not (GOLDEN_DIR / f"{r['name']}.json").exists()]
    assert not missing, f"run scripts/make_golden.py for {missing}"


@pytest.mark.parametrize("row", SHIPPED, ids=[r["name"] for r in SHIPPED])
def test_shipped_logits_unchanged(row):
    golden_path = GOLDEN_DIR / f"{row['name']}.json"
    if not golden_path.exists():
        pytest.fail(f"no golden logits for {row['name']}")
    golden = json.loads(golden_path.read_text())
    model, card = load_checkpoint(row["path"])
    assert golden["weights_sha256"] == card["weights_sha256"], "weights changed: regenerate the golden file"
    logits = golden_logits(model, card)
    expected = torch.tensor(golden["logits"])
    assert logits.shape == expected.shape
    assert torch.allclose(logits, expected, atol=TOLERANCE), (logits - expected).abs().max().item()
