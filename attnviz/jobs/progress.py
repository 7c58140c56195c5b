"""A run's progress as the app reads it: the trainer's JSON events (``progress.jsonl``), their summary
for charts and status lines, and the trainer's one-sentence error."""

from __future__ import annotations

import json
from pathlib import Path


def read_events(run_dir: str | Path) -> list[dict]:
    """Parse ``progress.jsonl``: one JSON object per complete line; a torn last line is skipped."""
    path = Path(run_dir) / "progress.jsonl"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue  # a human progress line or a partial write
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def last_error_line(run_dir: Path) -> str:
    """The trainer's one-sentence ``error: ...`` line from stderr, if it wrote one."""
    try:
        lines = (run_dir / "stderr.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        for prefix in ("error:", "cancelled:"):
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    return ""


def summarize(events: list[dict]) -> dict:
    """Progress events of one run as plain series for charts and status lines.

    Returns ``{"start": dict|None, "steps": {"global_step", "epoch_float", "loss", "train_acc",
    "images_per_s"}: lists, "epochs": [epoch events], "last_step": dict|None, "end": dict|None,
    "error": dict|None, "fraction": 0..1, "eta_s": float|None, "images_per_s": float|None}``.
    """
    start = next((e for e in events if e.get("event") == "start"), None)
    steps = [e for e in events if e.get("event") == "step"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    end = next((e for e in reversed(events) if e.get("event") == "end"), None)
    error = next((e for e in reversed(events) if e.get("event") == "error"), None)
    series = {"global_step": [], "epoch_float": [], "loss": [], "train_acc": [], "images_per_s": []}
    for e in steps:
        spe = max(int(e.get("steps_per_epoch") or 1), 1)
        series["global_step"].append(e.get("global_step"))
        series["epoch_float"].append((e.get("epoch", 1) - 1) + e.get("step", 0) / spe)
        for key in ("loss", "train_acc", "images_per_s"):
            series[key].append(e.get(key))
    last = steps[-1] if steps else None
    fraction = 0.0
    if end is not None:
        fraction = 1.0
    elif last is not None and last.get("total_steps"):
        fraction = min(1.0, last["global_step"] / last["total_steps"])
    return {"start": start, "steps": series, "epochs": epochs, "last_step": last, "end": end, "error": error,
            "fraction": fraction, "eta_s": None if end is not None or last is None else last.get("eta_s"),
            "images_per_s": None if last is None else last.get("images_per_s")}
