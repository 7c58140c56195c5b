"""Checkpoints that are safe to load: ``NAME.safetensors`` (weights) + ``NAME.json`` (model card).

Loading never unpickles: weights are read with ``safetensors`` and the card with ``json``. A load is
refused, with one sentence, when the file is a pickle format (.pt/.pth/.pkl/.ckpt/.bin), the card is
not valid JSON or lacks required keys, the weights' sha256 differs from the card, a tensor is
non-finite, or the weights do not fit the card's spec. Loading only reads: a failed load changes
nothing on disk.

Writes are atomic: both files are written to temporary names in the same folder and fsync'ed, then
renamed weights-first, card-last (the card's rename is the commit point). If a process dies between
the two renames, the card still names the old hash; ``load_checkpoint`` then uses the complete
``NAME.json.tmp`` whose hash matches (read-only roll-forward), so a checkpoint is never lost.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from attnviz import __version__
from attnviz.errors import AttnvizError, CheckpointError
from attnviz.models.registry import create_model
from attnviz.paths import SHIPPED_DIR, runs_dir

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"}
REQUIRED_KEYS = ("spec", "num_classes", "weights_sha256")
MAX_CARD_BYTES = 8 * 1024 * 1024
MAX_WEIGHTS_BYTES = 2 * 1024**3


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two writers never share it
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, err) from err


def _disk_error(path: Path, err: OSError) -> CheckpointError:
    if err.errno == errno.ENOSPC:
        return CheckpointError(f"The disk is full: could not write {path.name} in {path.parent}.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(f"No permission to write {path.name} in {path.parent}.")
    return CheckpointError(f"Could not write {path}: {err.strerror or err}.")


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or strided storage; channels_last is strided)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(model: nn.Module, directory: str | Path, name: str, card: dict | None = None) -> Path:
    """Write ``NAME.safetensors`` + ``NAME.json`` atomically; returns the card's path.

    ``card`` adds to (and overrides) the fields filled here: name, spec, num_classes, in_chans,
    params, attnviz_version, created, weights_sha256.
    """
    directory = Path(directory)
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise CheckpointError(f"'{name}' is not a valid checkpoint name (no slashes, not hidden).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _disk_error(directory / name, err) from err
    weights_path = directory / f"{name}.safetensors"
    card_path = directory / f"{name}.json"
    weights_tmp = weights_path.with_name(weights_path.name + ".tmp")
    card_tmp = card_path.with_name(card_path.name + ".tmp")
    tensors = state_dict_for_saving(model)
    try:
        # a single metadata key: safetensors writes several in random order, which would change the hash
        save_file(tensors, str(weights_tmp), metadata={"attnviz_spec": str(getattr(model, "spec", ""))})
        with open(weights_tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        full_card = {
            "name": name,
            "spec": getattr(model, "spec", ""),
            "num_classes": getattr(model, "num_classes", None),
            "in_chans": getattr(model, "in_chans", 3),
            "params": sum(p.numel() for p in model.parameters()),
            "attnviz_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        full_card.update(card or {})
        full_card["weights_sha256"] = sha256_file(weights_tmp)
        payload = json.dumps(full_card, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
        with open(card_tmp, "w", encoding="utf-8") as handle:
            handle.write(payload + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(weights_tmp, weights_path)
        os.replace(card_tmp, card_path)  # commit point
        _fsync_dir(directory)
    except OSError as err:
        weights_tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
        raise _disk_error(weights_path, err) from err
    except ValueError as err:  # allow_nan=False: a NaN metric must not produce invalid JSON
        weights_tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
        raise CheckpointError(f"The model card for {name} holds a value that is not valid JSON ({err}).") from err
    return card_path


def _resolve(path: str | Path) -> tuple[Path, Path]:
    """(card path, weights path) for a .json, a .safetensors, or a name inside a checkpoint folder."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{p.name} is a pickle-based file; attnviz only loads .safetensors weights with a .json model card "
            "(pickles can run arbitrary code)."
        )
    if p.suffix == ".json":
        card_path, weights_path = p, p.with_suffix(".safetensors")
    elif p.suffix == ".safetensors":
        card_path, weights_path = p.with_suffix(".json"), p
    else:
        named = p if p.parent != Path(".") or p.exists() else SHIPPED_DIR / p.name
        for base in (named, SHIPPED_DIR / p.name):
            if base.with_suffix(".json").exists() or Path(str(base) + ".json").exists():
                card_path = Path(str(base) + ".json")
                return card_path, Path(str(base) + ".safetensors")
        raise CheckpointError(f"No checkpoint named '{path}' was found (expected {p.name}.json and .safetensors).")
    return card_path, weights_path


def read_card(card_path: Path) -> dict:
    """Parse and validate a model card (JSON only)."""
    if not card_path.is_file():
        raise CheckpointError(f"The model card {card_path.name} is missing next to the weights.")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise CheckpointError(f"The model card {card_path.name} is too large to be a model card.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"The model card {card_path.name} is not valid JSON ({err.__class__.__name__}).") from err
    if not isinstance(card, dict):
        raise CheckpointError(f"The model card {card_path.name} must be a JSON object.")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"The model card {card_path.name} lacks {', '.join(missing)}.")
    return card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load (model in eval mode, card). Raises ``CheckpointError`` with one sentence on any problem."""
    card_path, weights_path = _resolve(path)
    card = read_card(card_path)
    if not weights_path.is_file():
        raise CheckpointError(f"The weights file {weights_path.name} is missing next to its model card.")
    if weights_path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"The weights file {weights_path.name} is larger than 2 GB; refusing to load it.")
    with open(weights_path, "rb") as handle:
        head = handle.read(16)
    if head[:2] == b"\x80\x02" or head[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{weights_path.name} is a pickle/zip (torch.save) file, not safetensors; refusing it.")
    digest = sha256_file(weights_path)
    if digest != card["weights_sha256"]:
        pending = card_path.with_name(card_path.name + ".tmp")
        rolled = None
        if pending.is_file():
            try:
                candidate = read_card(pending)
                if candidate.get("weights_sha256") == digest:
                    rolled = candidate
            except CheckpointError:
                rolled = None
        if rolled is None:
            raise CheckpointError(
                f"The weights {weights_path.name} do not match the sha256 in {card_path.name}; "
                "the file was changed or corrupted."
            )
        card = rolled
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path.name} is not a readable safetensors file ({err}).") from err
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"The weights in {weights_path.name} contain NaN or infinite values ({key}).")

    try:
        model = create_model(str(card["spec"]), num_classes=int(card["num_classes"]), in_chans=int(card.get("in_chans", 3)))
    except AttnvizError as err:
        raise CheckpointError(f"The model card {card_path.name} names an unusable spec: {err}") from err
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The model card {card_path.name} has an invalid num_classes or in_chans.") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        detail = (mismatched or missing or unexpected)[0]
        raise CheckpointError(
            f"The weights in {weights_path.name} do not fit spec '{card['spec']}' "
            f"({len(mismatched)} shape mismatches, {len(missing)} missing, {len(unexpected)} unexpected; e.g. {detail})."
        )
    model.load_state_dict(tensors, strict=True)
    model.eval()
    card = dict(card)
    card.setdefault("name", card_path.stem)
    card["path"] = str(card_path)
    return model.to(device), card


def checkpoint_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Shipped folder, ``$ATTNVIZ_CHECKPOINTS`` (os.pathsep-separated), the user's runs folder, extras."""
    dirs = [SHIPPED_DIR]
    env = os.environ.get("ATTNVIZ_CHECKPOINTS", "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    dirs.append(runs_dir())
    dirs += [Path(p) for p in (extra or [])]
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def list_checkpoints(dirs: list[str | Path] | None = None) -> list[dict]:
    """One summary per valid card found (folders and one level of sub-folders); invalid ones are skipped
    with the reason in ``problems`` of a separate entry list (``list_checkpoints_with_problems``)."""
    return list_checkpoints_with_problems(dirs)[0]


def list_checkpoints_with_problems(dirs: list[str | Path] | None = None) -> tuple[list[dict], list[str]]:
    found, problems, seen = [], [], set()
    search = [Path(d) for d in dirs] if dirs is not None else checkpoint_dirs()
    for directory in search:
        if not directory.is_dir():
            continue
        cards = sorted(directory.glob("*.json")) + sorted(directory.glob("*/*.json"))
        for card_path in cards:
            if card_path.name.startswith(".") or not card_path.with_suffix(".safetensors").exists():
                continue
            real = card_path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                card = read_card(card_path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            metrics = card.get("metrics") or {}
            found.append({
                "name": card.get("name", card_path.stem),
                "spec": card["spec"],
                "dataset": card.get("dataset"),
                "num_classes": card["num_classes"],
                "params": card.get("params"),
                "flops": card.get("flops"),
                "test_acc": metrics.get("test_acc"),
                "shipped": directory == SHIPPED_DIR,
                "path": str(card_path),
                "sha256": card["weights_sha256"],
                "created": card.get("created"),
            })
    return found, problems
