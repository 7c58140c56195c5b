"""The named sets through torchvision (``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``): downloaded
into the data root when the network allows; offline, a :class:`DatasetError` names the folder and the
file to put there. torchvision reads the CIFAR ``python`` batches with pickle only after checking the
files' MD5 against the official release, so only those exact files are ever unpickled."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from attnviz.data.dataset import ImageDataset
from attnviz.errors import DatasetError

NAMED_DATASETS = ("cifar10", "cifar100", "mnist", "fashionmnist")


_NAMED_INFO = {
    "cifar10": ("CIFAR10", "CIFAR-10", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "CIFAR-100", "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": ("MNIST", "MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashionmnist": ("FashionMNIST", "Fashion-MNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
}


def load_named(name: str, root: Path, download: bool) -> ImageDataset:
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
