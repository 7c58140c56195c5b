"""``imagefolder:`` datasets: folders of class sub-folders and ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archives
of one, read safely into memory (see :mod:`attnviz.data` for the rules), decoded once and cached as
``.npz`` keyed by the source's content."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from attnviz.data.dataset import ImageDataset
from attnviz.errors import DatasetError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
MAX_ARCHIVE_FILES = 500_000
MAX_ARCHIVE_BYTES = 2 * 1024**3
MAX_MEMBER_BYTES = 64 * 1024**2
MAX_IMAGE_PIXELS = 16_000_000
DEFAULT_IMAGE_SIZE = 32
DEFAULT_TEST_FRACTION = 0.2
# Bump when decoding changes so stale caches are not reused.
CACHE_FORMAT = 1


def _is_archive(path: Path) -> bool:
    lowered = path.name.lower()
    return path.is_file() and lowered.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip"))


def _source_key(path: Path) -> str:
    """A cache key that changes whenever the source's content may have changed."""
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    else:
        digest.update(str(path).encode())
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for filename in sorted(filenames):
                full = Path(dirpath) / filename
                try:
                    info = full.stat()
                except OSError:
                    continue
                rel = full.relative_to(path).as_posix()
                digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_folder_cached(
    path: Path, canonical: str, cache: Path, image_size: int | None, test_fraction: float, use_cache: bool
) -> ImageDataset:
    if not (path.is_dir() or _is_archive(path)):
        raise DatasetError(f"{path} is neither a folder nor a .tar/.tar.gz/.tgz/.zip archive.")
    cache_file = None
    if use_cache:
        key = hashlib.sha256(
            f"{CACHE_FORMAT}|{_source_key(path)}|{image_size}|{test_fraction}".encode()
        ).hexdigest()[:32]
        cache_file = cache / "datasets" / f"{key}.npz"
        cached = _read_cache(cache_file, canonical)
        if cached is not None:
            return cached
    files = _ArchiveFiles(path) if path.is_file() else _FolderFiles(path)
    dataset = _decode_tree(files, canonical, image_size, test_fraction)
    if cache_file is not None:
        _write_cache(cache_file, dataset)
    return dataset


class _FolderFiles:
    """Image files under a folder as ``(relative posix path, read())`` pairs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def items(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or Path(filename).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                full = Path(dirpath) / filename
                yield full.relative_to(self.root).as_posix(), full.read_bytes


class _ArchiveFiles:
    """Image members of a tar or zip archive, read into memory with safety checks."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.label = str(archive)

    def _check_name(self, name: str) -> str:
        posix = PurePosixPath(name.replace("\\", "/"))
        if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
            raise DatasetError(f"{self.archive} is unsafe: member '{name}' would be extracted outside its folder.")
        return "/".join(part for part in posix.parts if part not in ("", "."))

    def items(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        try:
            if self.archive.name.lower().endswith(".zip"):
                yield from self._zip_items()
            else:
                yield from self._tar_items()
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise DatasetError(f"{self.archive} is not a readable archive ({type(err).__name__}: {err}).") from err

    def _count(self, count: int, total: int) -> None:
        if count > MAX_ARCHIVE_FILES:
            raise DatasetError(f"{self.archive} has more than {MAX_ARCHIVE_FILES:,} files; refusing to read it.")
        if total > MAX_ARCHIVE_BYTES:
            raise DatasetError(
                f"{self.archive} holds more than {MAX_ARCHIVE_BYTES // 1024**3} GiB uncompressed; refusing to read it."
            )

    def _tar_items(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        count = total = 0
        with tarfile.open(self.archive, "r:*") as archive:
            for member in archive:
                name = self._check_name(member.name)
                if member.issym() or member.islnk():
                    raise DatasetError(f"{self.archive} is unsafe: member '{member.name}' is a link.")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise DatasetError(f"{self.archive} is unsafe: member '{member.name}' is not a regular file.")
                count += 1
                total += member.size
                self._count(count, total)
                if not _wanted(name):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DatasetError(f"{member.name} in {self.archive} is larger than {MAX_MEMBER_BYTES >> 20} MiB.")
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                yield name, (lambda data=data: data)

    def _zip_items(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        count = total = 0
        with zipfile.ZipFile(self.archive) as archive:
            for info in archive.infolist():
                name = self._check_name(info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DatasetError(f"{self.archive} is unsafe: member '{info.filename}' is a link.")
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    raise DatasetError(f"{info.filename} in {self.archive} is encrypted.")
                count += 1
                total += info.file_size
                self._count(count, total)
                if not _wanted(name):
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    raise DatasetError(f"{info.filename} in {self.archive} is larger than {MAX_MEMBER_BYTES >> 20} MiB.")
                with archive.open(info) as handle:
                    # read at most the cap + 1: a member lying about its size cannot blow memory up
                    data = handle.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    raise DatasetError(f"{info.filename} in {self.archive} is larger than {MAX_MEMBER_BYTES >> 20} MiB.")
                yield name, (lambda data=data: data)


def _wanted(rel: str) -> bool:
    parts = rel.split("/")
    return (
        not any(p.startswith(".") or p == "__MACOSX" for p in parts)
        and PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS
    )


def _decode_tree(files, canonical: str, image_size: int | None, test_fraction: float) -> ImageDataset:
    entries = [(rel, reader) for rel, reader in files.items() if _wanted(rel)]
    if not entries:
        raise DatasetError(f"{files.label} holds no image files (.jpg, .png, ...) in class sub-folders.")
    entries = _without_wrapper_folders(entries)
    split_layout = {"train", "test"} <= {rel.split("/", 1)[0] for rel, _ in entries}
    if split_layout:
        train_files = {rel.split("/", 1)[1]: r for rel, r in entries if rel.startswith("train/")}
        test_files = {rel.split("/", 1)[1]: r for rel, r in entries if rel.startswith("test/")}
    else:
        train_files, test_files = _held_out_split(dict(entries), test_fraction)
    train_classes, test_classes = _classes_of(train_files), _classes_of(test_files)
    _check_classes(files.label, split_layout, train_classes, test_classes)
    index = {name: i for i, name in enumerate(train_classes)}
    train_list = [(rel, train_files[rel], index[cls]) for cls, rels in train_classes.items() for rel in rels]
    test_list = [(rel, test_files[rel], index[cls]) for cls, rels in test_classes.items() for rel in rels]
    prefix_train, prefix_test = ("train/", "test/") if split_layout else ("", "")
    decoded_train = [_decode_image(reader(), f"{files.label}/{prefix_train}{rel}") for rel, reader, _ in train_list]
    decoded_test = [_decode_image(reader(), f"{files.label}/{prefix_test}{rel}") for rel, reader, _ in test_list]
    grey = all(img.mode == "L" for img in decoded_train + decoded_test)
    sizes = {img.size for img in decoded_train + decoded_test}
    target = None
    if image_size is not None:
        target = (int(image_size), int(image_size))
    elif len(sizes) > 1:
        target = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    return ImageDataset(
        name=canonical,
        train_images=_stack(decoded_train, grey, target, sizes),
        train_labels=torch.tensor([label for _, _, label in train_list], dtype=torch.int64),
        test_images=_stack(decoded_test, grey, target, sizes),
        test_labels=torch.tensor([label for _, _, label in test_list], dtype=torch.int64),
        class_names=list(train_classes),
    )


def _without_wrapper_folders(entries: list) -> list:
    """Look through single top-level folders (archives made with ``tar -czf x.tar.gz myset/``)."""
    while True:
        tops = {rel.split("/", 1)[0] for rel, _ in entries}
        if not (len(tops) == 1 and all(rel.count("/") >= 3 for rel, _ in entries)):
            return entries
        top = next(iter(tops))
        if top.lower() in ("train", "test"):  # it is the split itself: keep it
            return entries
        entries = [(rel.split("/", 1)[1], reader) for rel, reader in entries]


def _classes_of(tree: dict) -> dict[str, list[str]]:
    """``{class folder: sorted relative paths}``, classes sorted; an image beside the folders has no class."""
    by_class: dict[str, list[str]] = {}
    for rel in tree:
        if "/" in rel:
            by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    return {k: sorted(v) for k, v in sorted(by_class.items())}


def _check_classes(label: str, split_layout: bool, train_classes: dict, test_classes: dict) -> None:
    where = f"{label}{'/train' if split_layout else ''}"
    if not train_classes:
        raise DatasetError(f"{where} has no class sub-folders with images.")
    if len(train_classes) < 2:
        raise DatasetError(f"{where} has only one class ('{next(iter(train_classes))}'); at least two are needed.")
    unknown = sorted(set(test_classes) - set(train_classes))
    if unknown:
        raise DatasetError(f"{label}/test has classes not in train: {', '.join(unknown[:5])}.")
    if not test_classes:
        raise DatasetError(f"{label} has no test images.")


def _stack(images, grey: bool, target, sizes: set) -> torch.Tensor:
    arrays = [_to_array(img, grey, target) for img in images]
    array = np.stack(arrays) if arrays else np.zeros((0, 1 if grey else 3, *(target or next(iter(sizes))[::-1])), np.uint8)
    return torch.from_numpy(array)


def _held_out_split(tree: dict, test_fraction: float) -> tuple[dict, dict]:
    by_class: dict[str, list[str]] = {}
    for rel in tree:
        if "/" in rel:
            by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    train: dict = {}
    test: dict = {}
    for rels in by_class.values():
        ranked = sorted(rels, key=lambda r: hashlib.sha256(r.encode("utf-8")).hexdigest())
        n_test = int(round(len(ranked) * test_fraction))
        if len(ranked) >= 2:
            n_test = min(max(n_test, 1), len(ranked) - 1)
        else:
            n_test = 0
        for i, rel in enumerate(ranked):
            (test if i < n_test else train)[rel] = tree[rel]
    return train, test


def _decode_image(data: bytes, label: str):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DatasetError(f"{label} is {width}x{height} pixels, more than this loader accepts.")
            image.load()
            if image.mode in ("L", "1", "I", "I;16", "F"):
                converted = image.convert("L")
            else:
                converted = image.convert("RGB")
            return converted
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad input
        raise DatasetError(f"{label} is not a readable image ({type(err).__name__}).") from err


def _to_array(image, grey: bool, target: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    if not grey and image.mode != "RGB":
        image = image.convert("RGB")
    if target is not None and image.size != target:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(target, Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# cache: plain arrays in .npz, read without pickle


def _read_cache(path: Path, canonical: str) -> ImageDataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        return ImageDataset(
            name=canonical,
            train_images=torch.from_numpy(arrays["train_images"]),
            train_labels=torch.from_numpy(arrays["train_labels"]).to(torch.int64),
            test_images=torch.from_numpy(arrays["test_images"]),
            test_labels=torch.from_numpy(arrays["test_labels"]).to(torch.int64),
            class_names=[str(c) for c in arrays["class_names"].tolist()],
            mean=tuple(float(v) for v in arrays["mean"]),
            std=tuple(float(v) for v in arrays["std"]),
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt, never trusted


def _write_cache(path: Path, dataset: ImageDataset) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    train_images=dataset.train_images.numpy(),
                    train_labels=dataset.train_labels.numpy(),
                    test_images=dataset.test_images.numpy(),
                    test_labels=dataset.test_labels.numpy(),
                    class_names=np.array(dataset.class_names, dtype=np.str_),
                    mean=np.array(dataset.mean, dtype=np.float64),
                    std=np.array(dataset.std, dtype=np.float64),
                )
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except OSError as err:
        # The cache is an optimisation: a read-only or full disk must not stop the run.
        warnings.warn(f"could not cache the decoded dataset in {path.parent}: {err}", stacklevel=3)
