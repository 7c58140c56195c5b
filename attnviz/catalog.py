"""The zoo table: every model the app can show, one row each, with measured costs.

Rows come from three places:
- ``shipped``: checkpoints in the repository's ``checkpoints/``;
- ``your run``: checkpoints written by training runs under ``$ATTNVIZ_HOME/runs``;
- ``added``: checkpoints in the folders of ``$ATTNVIZ_CHECKPOINTS``;
- ``untrained``: the zoo's entries (:data:`ZOO_SPECS`) with no trained checkpoint of their spec and no
  shipped one of their name (an entry being retrained under a changed spec keeps its shipped checkpoint), so
  a new user can still see the architectures; their outputs are random and every page says so.

Each row holds spec, attention, activation, Interflow mode, dataset, params and FLOPs (from the card,
else counted on the built model by ``attnviz.stats``), test accuracy (from the card: measured by the
trainer on the test split; ``None`` for untrained models) and CPU latency: the median time of a
batch-1 forward pass on the CPU, measured once per (spec, input size, torch version, CPU threads) and
kept in ``$ATTNVIZ_HOME/cache/latency.json`` so later servers do not measure again.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from attnviz.checkpoints import list_checkpoints, load_checkpoint, read_card
from attnviz.device import describe_device, pick_device
from attnviz.errors import AttnvizError, CheckpointError
from attnviz.models.registry import create_model, parse_spec
from attnviz.paths import attnviz_home, runs_dir
from attnviz.stats import count_flops, count_params
from attnviz.zoo import ZOO

# The specs the shipped zoo is made of (issue 5); listed as untrained until their checkpoints exist.
ZOO_SPECS = tuple(spec for _, spec in ZOO)
UNTRAINED_PREFIX = "untrained:"
_CACHE_LOCK = threading.Lock()


@dataclass
class ZooRow:
    id: str  # stable identifier used by the app and its URLs
    name: str
    spec: str
    source: str  # shipped | your run | added | untrained
    attention: str
    activation: str
    interflow: str
    dataset: str
    num_classes: int
    class_names: list[str]
    params: int | None
    flops: int | None
    test_acc: float | None
    cpu_latency_ms: float | None
    path: str | None  # the card (.json) for trained models
    weights_sha256: str | None
    epochs: float | None  # epochs trained (a cancelled run: the fraction it reached)
    created: str | None
    status: str = "complete"  # the card's status: complete | running | cancelled | diverged; untrained

    @property
    def trained(self) -> bool:
        return self.source != "untrained"

    @property
    def shipped(self) -> bool:
        return self.source == "shipped"

    @property
    def own_run(self) -> bool:
        return self.source == "your run"

    def as_dict(self) -> dict:
        """The row as plain data, with ``trained`` / ``shipped`` / ``own_run`` so callers need not
        compare ``source`` strings."""
        return asdict(self) | {"trained": self.trained, "shipped": self.shipped, "own_run": self.own_run}

    @classmethod
    def from_dict(cls, values: dict) -> ZooRow:
        """Back from :meth:`as_dict` (the derived flags are dropped)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def cache_dir() -> Path:
    return attnviz_home() / "cache"


def describe_spec(spec: str) -> dict[str, str]:
    """attention / activation / interflow of a spec, for the table (``-`` where not applicable)."""

    parsed = parse_spec(spec)
    activation = "-"
    if parsed.attention == "se":
        activation = parsed.activation or "relu"
    return {"attention": parsed.attention, "activation": activation, "interflow": parsed.interflow or "-"}


def _source_of(entry: dict, runs: Path) -> str:
    if entry.get("shipped"):
        return "shipped"
    try:
        Path(entry["path"]).resolve().relative_to(runs.resolve())
        return "your run"
    except ValueError:
        return "added"


def _card_rows(entries: list[dict], runs: Path) -> list[ZooRow]:
    """Rows from ``attnviz.checkpoints.list_checkpoints`` entries (full cards read for the rest)."""

    rows = []
    for entry in entries:
        try:
            info = describe_spec(entry["spec"])
            card = read_card(Path(entry["path"]))
        except (KeyError, AttnvizError):
            continue  # a card this version cannot read or build is not offered
        source = _source_of(entry, runs)
        path = Path(entry["path"])
        name = entry.get("name") or path.stem
        row_id = {"shipped": name, "your run": f"run:{path.parent.name}/{name}"}.get(source, f"added:{name}")
        recipe = card.get("recipe") or {}
        rows.append(ZooRow(
            id=row_id, name=name, spec=entry["spec"], source=source, dataset=str(entry.get("dataset") or "?"),
            num_classes=int(entry.get("num_classes") or 10), class_names=list(card.get("class_names") or []),
            params=entry.get("params"), flops=entry.get("flops"), test_acc=entry.get("test_acc"),
            cpu_latency_ms=None, path=str(path), weights_sha256=entry.get("sha256"),
            epochs=card.get("epochs_done", recipe.get("epochs")), created=entry.get("created"),
            status=str(card.get("status") or "complete"), **info,
        ))
    return rows


def zoo_rows(*, include_untrained: bool = True, dirs: list[Path] | None = None,
             with_latency: bool = True) -> list[ZooRow]:
    """The zoo table (see the module docstring); ``dirs`` overrides ``checkpoint_dirs()``.

    Latencies and counted costs come from the on-disk caches; ``measure_costs`` fills what is missing.
    """

    rows = _card_rows(list_checkpoints(dirs), runs_dir())
    if include_untrained:
        trained_specs = {r.spec for r in rows}
        # an entry being retrained under a changed spec keeps its shipped checkpoint until the new one ships
        shipped_names = {r.name for r in rows if r.source == "shipped"}
        for name, spec in ZOO:
            if _canonical(spec) in trained_specs or name in shipped_names:
                continue
            info = describe_spec(spec)
            rows.append(ZooRow(
                id=UNTRAINED_PREFIX + spec, name=spec, spec=_canonical(spec), source="untrained",
                dataset="-", num_classes=10, class_names=[], params=None, flops=None, test_acc=None,
                cpu_latency_ms=None, path=None, weights_sha256=None, epochs=None, created=None,
                status="untrained", **info,
            ))
    costs = _read_cache("costs.json")
    for row in rows:
        if row.params is None or row.flops is None:
            cost = costs.get(_cost_key(row))
            if cost:
                row.params, row.flops = cost["params"], cost["flops"]
    if with_latency:
        latencies = _read_cache("latency.json")
        for row in rows:
            row.cpu_latency_ms = _cached_latency(latencies.get(_latency_key(row)))[0]
    return rows


def _canonical(spec: str) -> str:
    return parse_spec(spec).canonical()


# ------------------------------------------------------------------------------------ cost caches
def _read_cache(name: str) -> dict:
    try:
        return json.loads((cache_dir() / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}


def _write_cache(name: str, updates: dict) -> None:
    with _CACHE_LOCK:
        data = _read_cache(name)
        data.update(updates)
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, folder / name)
        except OSError:
            pass  # a read-only home only means measuring again next time


def _cost_key(row: ZooRow) -> str:
    return f"{row.spec}|{row.num_classes}"


def _latency_key(row: ZooRow) -> str:
    import torch

    return f"{row.spec}|{row.num_classes}|torch {torch.__version__}|{torch.get_num_threads()} threads|" \
           f"{platform.machine()}"


def build_model(row: ZooRow):
    """The model of a row with its card: trained rows load their checkpoint, untrained ones are built
    with random weights (card ``untrained: True``). Returned in eval mode, gradients off."""

    if row.trained:
        if not row.path:
            raise CheckpointError(f"{row.name} has no checkpoint file.")
        model, card = load_checkpoint(row.path)
        card = dict(card)
    else:
        import torch

        torch.manual_seed(0)  # the same random weights in every process, so results are reproducible
        model = create_model(row.spec, num_classes=row.num_classes)
        card = {"name": row.name, "spec": row.spec, "num_classes": row.num_classes,
                "class_names": _default_class_names(row.num_classes), "in_chans": 3, "input_size": [32, 32],
                "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616], "dataset": "-",
                "untrained": True, "weights_sha256": None}
    model.eval()
    model.requires_grad_(False)
    return model, card


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _default_class_names(num_classes: int) -> list[str]:
    return CIFAR10_CLASSES if num_classes == 10 else [f"class {i}" for i in range(num_classes)]


LATENCY_REPEATS = 20
LATENCY_WARMUPS = 3


def measure_latency(model, input_size: tuple[int, int, int] = (3, 32, 32), repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of a batch-1 forward pass on the CPU (no grad, eval mode, 3 warm-ups)."""
    import torch

    x = torch.zeros(1, *input_size)
    times = []
    with torch.no_grad():
        for i in range(repeats + LATENCY_WARMUPS):
            start = time.perf_counter()
            model(x)
            if i >= LATENCY_WARMUPS:
                times.append(time.perf_counter() - start)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def latency_method() -> str:
    """How every CPU latency in the app is measured (one way, for the Zoo table and the sidebar)."""
    import torch

    threads = torch.get_num_threads()
    return (f"median of {LATENCY_REPEATS} batch-1 float32 forwards after {LATENCY_WARMUPS} warm-ups, "
            f"{threads} CPU thread{'' if threads == 1 else 's'}")


def _cached_latency(entry) -> tuple[float | None, str | None]:
    """(ms, measured_at) of a latency cache entry (older caches stored the bare number)."""
    if isinstance(entry, dict):
        return entry.get("ms"), entry.get("measured_at")
    return (float(entry), None) if isinstance(entry, (int, float)) else (None, None)


def measure_costs(rows: list[ZooRow], *, latency: bool = True) -> list[ZooRow]:
    """Fill missing params/FLOPs and CPU latencies (measured once, then read from the caches).

    Latencies are measured here only for rows the cache lacks; the app calls this once at server
    start (``device_report``), before any session's work, so they are taken on a quiet machine.
    """

    costs, latencies = {}, {}
    cached_latency = _read_cache("latency.json")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for row in rows:
        need_cost = row.params is None or row.flops is None
        known, _ = _cached_latency(cached_latency.get(_latency_key(row)))
        need_latency = latency and row.cpu_latency_ms is None and known is None
        if not (need_cost or need_latency):
            if latency and row.cpu_latency_ms is None:
                row.cpu_latency_ms = known
            continue

        # latency does not depend on the weights: build the architecture, no checkpoint read needed
        model = create_model(row.spec, num_classes=row.num_classes).eval()
        if need_cost:
            row.params = count_params(model)
            row.flops = count_flops(model, (3, 32, 32))
            costs[_cost_key(row)] = {"params": row.params, "flops": row.flops}
        if need_latency:
            row.cpu_latency_ms = round(measure_latency(model), 3)
            latencies[_latency_key(row)] = {"ms": row.cpu_latency_ms, "measured_at": stamp}
            cached_latency[_latency_key(row)] = latencies[_latency_key(row)]  # one number per architecture
    if costs:
        _write_cache("costs.json", costs)
    if latencies:
        _write_cache("latency.json", latencies)
    return rows


def latency_measured_at(rows: list[ZooRow]) -> str | None:
    """When the latencies of ``rows`` were measured (the latest of their cache stamps)."""
    cache = _read_cache("latency.json")
    stamps = [stamp for row in rows if (stamp := _cached_latency(cache.get(_latency_key(row)))[1])]
    return max(stamps) if stamps else None


def spec_params(specs: list[str], num_classes: int = 10) -> dict[str, int | None]:
    """Parameter counts of built (untrained) models; ``None`` for a spec this version cannot build."""

    out: dict[str, int | None] = {}
    for spec in specs:
        try:
            out[spec] = count_params(create_model(spec, num_classes=num_classes))
        except AttnvizError:
            out[spec] = None
    return out


def device_report(preference: str | None = None) -> dict:
    """Which device the app computes on and how fast it is: a float32 matrix-product rate measured here
    (GFLOP/s), and the zoo's CPU latencies (``measure_costs``: measured now for rows the cache lacks, so
    at server start) of which the plain ResNet-20's is quoted; the Zoo table shows the same numbers."""
    import torch


    device = pick_device(preference)
    n = 512
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    rows = measure_costs(zoo_rows(with_latency=False))
    reference = next((r.cpu_latency_ms for r in rows if r.spec == "resnet20" and r.num_classes == 10), None)
    if reference is None:  # no plain ResNet-20 in this zoo: measure the architecture the same way

        reference = round(measure_latency(create_model("resnet20").eval()), 3)
    return {"device": str(device), "description": describe_device(device),
            "gflops": round(2 * n**3 / seconds / 1e9, 1), "resnet20_cpu_ms": reference,
            "latency_method": latency_method(), "latency_measured_at": latency_measured_at(rows),
            "latencies": {f"{r.spec}|{r.num_classes}": r.cpu_latency_ms for r in rows},
            "threads": torch.get_num_threads()}
