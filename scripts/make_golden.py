"""Write tests/golden/NAME.json (logits on the fixed sample batch) for every shipped checkpoint.

    .venv/bin/python scripts/make_golden.py            # all shipped checkpoints
    .venv/bin/python scripts/make_golden.py NAME ...   # only these
Run it after (re)training a shipped checkpoint, and commit the JSON with the weights.
"""

from __future__ import annotations

import json
import sys

from attnviz.checkpoints import SHIPPED_DIR, list_checkpoints, load_checkpoint
from attnviz.golden import GOLDEN_DIR, golden_logits


def main(names: list[str]) -> int:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    rows = [r for r in list_checkpoints([SHIPPED_DIR]) if not names or r["name"] in names]
    for row in rows:
        model, card = load_checkpoint(row["path"])
        if card.get("status", "complete") != "complete":
            print(f"skip {row['name']}: training not finished ({card.get('status')})")
            continue
        logits = golden_logits(model, card)
        out = {"name": row["name"], "weights_sha256": card["weights_sha256"], "logits": logits.tolist()}
        (GOLDEN_DIR / f"{row['name']}.json").write_text(json.dumps(out) + "\n")
        print(f"wrote {row['name']}: top-1 {logits.argmax(1).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
