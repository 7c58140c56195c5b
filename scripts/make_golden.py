"""Write tests/golden/NAME.json (logits on the fixed sample batch) for every shipped checkpoint.

    .venv/bin/python scripts/make_golden.py            # all shipped checkpoints
    .venv/bin/python scripts/make_golden.py NAME ...   # only these
Run it after (re)training a shipped checkpoint, and commit the JSON with the weights
(``scripts/train_zoo.py`` does it itself for each model it ships).
"""

from __future__ import annotations

import sys

from attnviz.checkpoints import list_checkpoints
from attnviz.golden import write_golden
from attnviz.paths import SHIPPED_DIR


def main(names: list[str]) -> int:
    rows = [r for r in list_checkpoints([SHIPPED_DIR]) if not names or r["name"] in names]
    for row in rows:
        written = write_golden(row["path"])
        print(f"wrote {written}" if written else f"skip {row['name']}: training not finished")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
