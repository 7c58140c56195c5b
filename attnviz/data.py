"""Datasets as in-memory tensors: named sets, ``imagefolder:PATH`` and the shipped ``sample`` set.

Every dataset is loaded once into uint8 tensors ``[N, C, H, W]`` with int64 labels (training on
CIFAR-sized images is fastest with the whole set resident in memory, on the GPU too, and no
DataLoader workers). ``load_dataset(name)`` returns an :class:`ImageDataset`.

Names
- ``sample``: the real CIFAR-10 images shipped in ``attnviz/assets/sample`` (see its README).
- ``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``: through torchvision, downloaded into the
  data root (``data_root=`` argument, else ``$ATTNVIZ_DATA``, else ``~/.cache/attnviz/data``) when the
  network allows. Offline, a :class:`DatasetError` names the folder and the file to put there.
  torchvision reads the CIFAR ``python`` batches with pickle; it does so only after checking the
  files' MD5 against the official release, so only those exact files are ever unpickled.
- ``imagefolder:PATH``: a folder of class sub-folders, or a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` of
  one. A root holding ``train/`` and ``test/`` uses them as the splits (a single top-level folder in
  an archive is looked through); otherwise the root is flat and a deterministic held-out test split
  is taken per class: files ranked by ``sha256(relative path)``, the lowest ``test_fraction`` (20%,
  at least one file for a class of two or more) go to test. Class names are the sorted sub-folder
  names of the training split.

Archives are read member by member into memory and nothing is written to disk, so no member can
land outside a folder; we still refuse archives that could not be extracted safely (absolute
names, ``..``, links, devices, more than ``MAX_ARCHIVE_FILES`` files or ``MAX_ARCHIVE_BYTES``
uncompressed). Every image is decoded with PIL inside ``try``; a file that fails is named in the
error. Images larger than ``MAX_IMAGE_PIXELS`` are refused (decompression bombs).

Channels: grey-scale sets keep one channel (``in_chans=1``) and models are built for them with
``create_model(spec, num_classes, in_chans=1)``; nothing is replicated on disk or in memory. A folder
mixing grey and colour images is decoded as RGB. When a model expects a different channel count
than a dataset has (e.g. evaluating an RGB checkpoint on MNIST), :func:`match_channels` replicates a
grey channel to 3, or turns RGB into luma (ITU-R BT.601) for a 1-channel model.

Sizes: images of one size keep it. When sizes differ, every image is centre-cropped to a square and
resized (bicubic) to ``image_size`` (default 32).

Normalisation: ``mean``/``std`` per channel (on the 0..1 scale) are computed from the training split
and stored in every model card; :func:`preprocess` is the single place that turns uint8 images into
model inputs, used by training and by evaluation alike.

Cache: decoded datasets are saved as ``.npz`` of plain arrays (read with ``allow_pickle=False``) in
the cache dir (``cache_dir=``, else ``$ATTNVIZ_CACHE``, else ``~/.cache/attnviz``) under
``datasets/``, keyed by the source's content (archives: SHA-256 of the bytes; folders: names, sizes
and modification times) so the 60,000-image CIFAR-10 JPEG set is decoded once.
"""

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
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from attnviz.errors import DatasetError

SAMPLE_DIR = Path(__file__).resolve().parent / "assets" / "sample"
NAMED_DATASETS = ("cifar10", "cifar100", "mnist", "fashionmnist")
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

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class ImageDataset:
    """A dataset held in memory: uint8 images ``[N, C, H, W]``, int64 labels, class names."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean or not self.std:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def in_chans(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_labels.shape[0])

    def subset(self, train_per_class: int | None = None, test_per_class: int | None = None) -> ImageDataset:
        """The first ``k`` images of each class of each split (stored order, so deterministic).

        Mean and std are kept from the full training split so a subset preprocesses like its parent.
        """

        def take(labels: torch.Tensor, per_class: int | None) -> torch.Tensor:
            if per_class is None:
                return torch.arange(labels.shape[0])
            picks = [torch.nonzero(labels == k).flatten()[:per_class] for k in range(self.num_classes)]
            return torch.sort(torch.cat(picks)).values

        train_idx = take(self.train_labels, train_per_class)
        test_idx = take(self.test_labels, test_per_class)
        return replace(
            self,
            train_images=self.train_images[train_idx],
            train_labels=self.train_labels[train_idx],
            test_images=self.test_images[test_idx],
            test_labels=self.test_labels[test_idx],
        )

    def card_fields(self) -> dict:
        """The model-card keys that describe this data and its preprocessing."""
        return {
            "dataset": self.name,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": list(self.input_size),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }


# ---------------------------------------------------------------------------------------------
# preprocessing shared by training and evaluation


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation on the 0..1 scale, accumulated in float64."""
    if images.shape[0] == 0:
        raise DatasetError("The training split has no images.")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 6) for m in mean), tuple(round(max(float(s), 1e-3), 6) for s in std)


def match_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Give uint8 or float images ``[N, C, H, W]`` the channel count a model expects.

    1 -> 3 replicates the grey channel; 3 -> 1 takes ITU-R BT.601 luma. Same count: unchanged.
    """
    have = images.shape[1]
    if have == in_chans:
        return images
    if have == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and in_chans == 1:
        weights = torch.tensor(_LUMA_WEIGHTS, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        luma = (images.to(torch.float32) * weights).sum(dim=1, keepdim=True)
        if images.dtype == torch.uint8:
            return luma.round_().clamp_(0, 255).to(torch.uint8)
        return luma.to(images.dtype)
    raise DatasetError(f"Cannot turn {have}-channel images into the {in_chans} channels the model expects.")


def preprocess(
    images: torch.Tensor,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> normalised float: ``(x / 255 - mean) / std`` per channel."""
    channels = images.shape[1]
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    out = images.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)
    return out if dtype == torch.float32 else out.to(dtype)


# ---------------------------------------------------------------------------------------------
# locations


def default_cache_dir() -> Path:
    return Path(os.environ.get("ATTNVIZ_CACHE") or Path.home() / ".cache" / "attnviz")


def default_data_root() -> Path:
    env = os.environ.get("ATTNVIZ_DATA")
    return Path(env) if env else default_cache_dir() / "data"


# ---------------------------------------------------------------------------------------------
# entry point


def portable_dataset_name(name: str) -> str:
    """A dataset name without the machine's paths: ``imagefolder:/x/y/cifar10.tar.gz`` -> ``imagefolder:cifar10.tar.gz``.

    Local runs keep the full name in their cards (so ``attnviz eval`` finds the data again); shipped
    cards carry this form, since the path of the machine that trained them means nothing elsewhere.
    """
    if name.startswith("imagefolder:"):
        return "imagefolder:" + name.split(":", 1)[1].rstrip("/").rsplit("/", 1)[-1]
    return name


def load_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool | None = None,
    image_size: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    use_cache: bool = True,
) -> ImageDataset:
    """Load a dataset by name into memory (see the module docstring for the names).

    ``download=None`` downloads named sets unless ``$ATTNVIZ_OFFLINE`` is set. ``image_size`` forces
    a square size for folders (default: keep a common size, else 32). Raises ``DatasetError``.
    """
    if not isinstance(name, str) or not name.strip():
        raise DatasetError("No dataset given (use sample, cifar10, cifar100, mnist, fashionmnist or imagefolder:PATH).")
    name = name.strip()
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    if image_size is not None and not 1 <= int(image_size) <= 1024:
        raise DatasetError(f"image_size must be between 1 and 1024, got {image_size}.")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    lowered = name.lower()
    if lowered == "sample":
        return _load_folder_cached(SAMPLE_DIR, "sample", cache, image_size, test_fraction, use_cache)
    if lowered in NAMED_DATASETS:
        root = Path(data_root) if data_root is not None else default_data_root()
        if download is None:
            download = not os.environ.get("ATTNVIZ_OFFLINE")
        return _load_named(lowered, root, download)
    if lowered.startswith("imagefolder:"):
        raw_path = name.split(":", 1)[1].strip()
        if not raw_path:
            raise DatasetError("imagefolder: needs a path, e.g. imagefolder:/data/my_images.")
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise DatasetError(f"{path} does not exist.")
        canonical = f"imagefolder:{path.resolve()}"  # shipped cards get portable_dataset_name(...)
        return _load_folder_cached(path.resolve(), canonical, cache, image_size, test_fraction, use_cache)
    raise DatasetError(
        f"Unknown dataset '{name}' (use sample, cifar10, cifar100, mnist, fashionmnist or imagefolder:PATH)."
    )


# ---------------------------------------------------------------------------------------------
# torchvision sets

_NAMED_INFO = {
    "cifar10": ("CIFAR10", "CIFAR-10", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "CIFAR-100", "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": ("MNIST", "MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashionmnist": ("FashionMNIST", "Fashion-MNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
}


def _load_named(name: str, root: Path, download: bool) -> ImageDataset:
    import torchvision.datasets as tv_datasets

    class_name, title, filename, url = _NAMED_INFO[name]
    dataset_cls = getattr(tv_datasets, class_name)
    splits = []
    for train in (True, False):
        try:
            splits.append(dataset_cls(str(root), train=train, download=False))
            continue
        except (RuntimeError, OSError):
            pass
        if not download:
            raise DatasetError(_offline_message(title, root, filename, url, reason="downloading is off"))
        try:
            root.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                splits.append(dataset_cls(str(root), train=train, download=True))
        except Exception as err:  # noqa: BLE001 - any network/IO failure means "offline"
            reason = f"the download failed: {type(err).__name__}"
            raise DatasetError(_offline_message(title, root, filename, url, reason=reason)) from err
    train_set, test_set = splits
    return ImageDataset(
        name=name,
        train_images=_tv_images(train_set.data),
        train_labels=torch.as_tensor(np.asarray(train_set.targets), dtype=torch.int64),
        test_images=_tv_images(test_set.data),
        test_labels=torch.as_tensor(np.asarray(test_set.targets), dtype=torch.int64),
        class_names=[str(c) for c in train_set.classes],
    )


def _offline_message(title: str, root: Path, filename: str, url: str, reason: str) -> str:
    return (
        f"{title} is not in {root} and {reason}: put {filename} (from {url}) in {root} "
        f"(or set ATTNVIZ_DATA to the folder that holds it) and run again."
    )


def _tv_images(data) -> torch.Tensor:
    array = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim == 3:  # MNIST-style [N, H, W]
        array = array[:, None, :, :]
    else:  # CIFAR-style [N, H, W, C]
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# folders and archives


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


def _load_folder_cached(
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
    # Look through a single top-level folder (archives made with `tar -czf x.tar.gz myset/`).
    while True:
        tops = {rel.split("/", 1)[0] for rel, _ in entries}
        if len(tops) == 1 and all(rel.count("/") >= 3 for rel, _ in entries):
            top = next(iter(tops))
            entries = [(rel.split("/", 1)[1], reader) for rel, reader in entries]
            if top.lower() in ("train", "test"):  # it was the split itself; undo
                entries = [(f"{top}/{rel}", reader) for rel, reader in entries]
                break
            continue
        break
    tops = {rel.split("/", 1)[0] for rel, _ in entries}
    split_layout = "train" in tops and "test" in tops
    if split_layout:
        train_files = {rel.split("/", 1)[1]: r for rel, r in entries if rel.startswith("train/")}
        test_files = {rel.split("/", 1)[1]: r for rel, r in entries if rel.startswith("test/")}
    else:
        train_files, test_files = _held_out_split(dict(entries), test_fraction)

    def classes_of(tree: dict) -> dict[str, list[str]]:
        by_class: dict[str, list[str]] = {}
        for rel in tree:
            if "/" not in rel:
                continue  # an image beside the class folders has no class
            by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
        return {k: sorted(v) for k, v in sorted(by_class.items())}

    train_classes = classes_of(train_files)
    test_classes = classes_of(test_files)
    where = f"{files.label}{'/train' if split_layout else ''}"
    if not train_classes:
        raise DatasetError(f"{where} has no class sub-folders with images.")
    if len(train_classes) < 2:
        raise DatasetError(f"{where} has only one class ('{next(iter(train_classes))}'); at least two are needed.")
    unknown = sorted(set(test_classes) - set(train_classes))
    if unknown:
        raise DatasetError(f"{files.label}/test has classes not in train: {', '.join(unknown[:5])}.")
    if not test_classes:
        raise DatasetError(f"{files.label} has no test images.")
    class_names = list(train_classes)
    index = {name: i for i, name in enumerate(class_names)}

    def ordered(tree: dict, by_class: dict) -> list[tuple[str, Callable[[], bytes], int]]:
        return [(rel, tree[rel], index[cls]) for cls, rels in by_class.items() for rel in rels]

    train_list = ordered(train_files, train_classes)
    test_list = ordered(test_files, test_classes)
    prefix_train = "train/" if split_layout else ""
    prefix_test = "test/" if split_layout else ""
    decoded_train = [_decode_image(reader(), f"{files.label}/{prefix_train}{rel}") for rel, reader, _ in train_list]
    decoded_test = [_decode_image(reader(), f"{files.label}/{prefix_test}{rel}") for rel, reader, _ in test_list]
    grey = all(img.mode == "L" for img in decoded_train + decoded_test)
    sizes = {img.size for img in decoded_train + decoded_test}
    target = None
    if image_size is not None:
        target = (int(image_size), int(image_size))
    elif len(sizes) > 1:
        target = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)

    def stack(images) -> torch.Tensor:
        arrays = [_to_array(img, grey, target) for img in images]
        array = np.stack(arrays) if arrays else np.zeros((0, 1 if grey else 3, *(target or next(iter(sizes))[::-1])), np.uint8)
        return torch.from_numpy(array)

    return ImageDataset(
        name=canonical,
        train_images=stack(decoded_train),
        train_labels=torch.tensor([label for _, _, label in train_list], dtype=torch.int64),
        test_images=stack(decoded_test),
        test_labels=torch.tensor([label for _, _, label in test_list], dtype=torch.int64),
        class_names=class_names,
    )


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
