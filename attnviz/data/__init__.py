"""Datasets as in-memory tensors: named sets, ``imagefolder:PATH`` and the shipped ``sample`` set.

Every dataset is loaded once into uint8 tensors ``[N, C, H, W]`` with int64 labels (training on
CIFAR-sized images is fastest with the whole set resident in memory, on the GPU too, and no
DataLoader workers). ``load_dataset(name)`` returns an :class:`ImageDataset`.

The package: :mod:`~attnviz.data.dataset` (``ImageDataset``, ``channel_stats``, ``match_channels``,
``preprocess``), :mod:`~attnviz.data.torchvision_sets` (the named sets), :mod:`~attnviz.data.folders`
(``imagefolder:`` folders and archives, decoding, the ``.npz`` cache); this file: ``load_dataset``.

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

import os
from pathlib import Path

from attnviz import paths
from attnviz.data.dataset import ImageDataset, channel_stats, match_channels, preprocess
from attnviz.data.folders import DEFAULT_TEST_FRACTION, load_folder_cached
from attnviz.data.torchvision_sets import NAMED_DATASETS, load_named
from attnviz.errors import DatasetError
from attnviz.paths import SAMPLE_DIR

__all__ = ["SAMPLE_DIR", "ImageDataset", "channel_stats", "load_dataset", "match_channels",
           "portable_dataset_name", "preprocess"]


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
    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    lowered = name.lower()
    if lowered == "sample":
        return load_folder_cached(SAMPLE_DIR, "sample", cache, image_size, test_fraction, use_cache)
    if lowered in NAMED_DATASETS:
        root = Path(data_root) if data_root is not None else paths.data_root()
        if download is None:
            download = not os.environ.get("ATTNVIZ_OFFLINE")
        return load_named(lowered, root, download)
    if lowered.startswith("imagefolder:"):
        raw_path = name.split(":", 1)[1].strip()
        if not raw_path:
            raise DatasetError("imagefolder: needs a path, e.g. imagefolder:/data/my_images.")
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise DatasetError(f"{path} does not exist.")
        canonical = f"imagefolder:{path.resolve()}"  # shipped cards get portable_dataset_name(...)
        return load_folder_cached(path.resolve(), canonical, cache, image_size, test_fraction, use_cache)
    raise DatasetError(
        f"Unknown dataset '{name}' (use sample, cifar10, cifar100, mnist, fashionmnist or imagefolder:PATH)."
    )
