"""attnviz.data: the sample set, imagefolder folders and archives, safety checks, channels, cache."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.data import (
    SAMPLE_DIR,
    ImageDataset,
    channel_stats,
    load_dataset,
    match_channels,
    preprocess,
)
from attnviz.errors import DatasetError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTNVIZ_DATA", str(tmp_path / "data"))


def _png(color, size=(8, 8), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_tree(root: Path, layout: dict[str, bytes]) -> Path:
    for rel, data in layout.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def _split_tree(size=(8, 8)) -> dict[str, bytes]:
    """train/test with two classes whose pixel colour encodes the class (red = cat, blue = dog)."""
    layout = {}
    for i in range(3):
        layout[f"train/cat/{i}.png"] = _png((200 + i, 0, 0), size)
        layout[f"train/dog/{i}.png"] = _png((0, 0, 200 + i), size)
    layout["test/cat/t0.png"] = _png((255, 0, 0), size)
    layout["test/dog/t0.png"] = _png((0, 0, 255), size)
    return layout


def test_sample_set_is_shipped_and_balanced():
    data = load_dataset("sample")
    assert data.name == "sample"
    assert data.class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]
    assert data.train_images.shape == (2000, 3, 32, 32)
    assert data.test_images.shape == (500, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.train_labels.bincount().tolist() == [200] * 10
    assert data.test_labels.bincount().tolist() == [50] * 10
    # CIFAR-10's well-known channel statistics, within sampling noise of 2,000 images
    assert np.allclose(data.mean, (0.4914, 0.4822, 0.4465), atol=0.02)
    assert np.allclose(data.std, (0.247, 0.243, 0.261), atol=0.02)
    assert (SAMPLE_DIR / "README.md").read_text().count("Krizhevsky") >= 1
    total_bytes = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total_bytes < 5_000_000


def test_sample_cache_round_trip_is_identical_and_pickle_free(tmp_path):
    first = load_dataset("sample")
    cache_files = list((tmp_path / "cache" / "datasets").glob("*.npz"))
    assert len(cache_files) == 1
    with np.load(cache_files[0], allow_pickle=False) as archive:  # would raise if it needed pickle
        assert set(archive.files) >= {"train_images", "class_names", "mean"}
    second = load_dataset("sample")
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert first.class_names == second.class_names and first.mean == second.mean


def test_damaged_cache_is_rebuilt(tmp_path):
    first = load_dataset("sample")
    (cache_file,) = (tmp_path / "cache" / "datasets").glob("*.npz")
    cache_file.write_bytes(b"not a zip")
    again = load_dataset("sample")
    assert torch.equal(first.train_images, again.train_images)


def test_imagefolder_with_train_and_test(tmp_path):
    root = _make_tree(tmp_path / "pets", _split_tree())
    data = load_dataset(f"imagefolder:{root}")
    assert data.class_names == ["cat", "dog"]
    assert data.train_images.shape == (6, 3, 8, 8) and data.test_images.shape == (2, 3, 8, 8)
    # labels follow the folder: red images are cats, blue are dogs
    red = data.train_images[:, 0, 0, 0] > 100
    assert torch.equal(red, data.train_labels == 0)
    assert data.test_labels.tolist() == [0, 1]
    assert data.test_images[0, :, 0, 0].tolist() == [255, 0, 0]


def test_imagefolder_flat_gets_deterministic_held_out_split(tmp_path):
    layout = {f"{cls}/{i:02d}.png": _png((i * 10, 0, 0)) for cls in ("a", "b", "c") for i in range(10)}
    root = _make_tree(tmp_path / "flat", layout)
    data = load_dataset(f"imagefolder:{root}", use_cache=False)
    again = load_dataset(f"imagefolder:{root}", use_cache=False)
    assert data.n_train == 24 and data.n_test == 6  # 20% of each class held out
    assert data.test_labels.bincount().tolist() == [2, 2, 2]
    assert torch.equal(data.test_images, again.test_images)
    # no image is in both splits (the red channel identifies an image within its class)
    for label in range(3):
        train_reds = set(data.train_images[data.train_labels == label, 0, 0, 0].tolist())
        test_reds = set(data.test_images[data.test_labels == label, 0, 0, 0].tolist())
        assert not train_reds & test_reds and len(train_reds | test_reds) == 10


def test_imagefolder_tarball_matches_folder(tmp_path):
    root = _make_tree(tmp_path / "pets", _split_tree())
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="pets")  # one top-level folder, as `tar -czf pets.tar.gz pets/` makes
    from_folder = load_dataset(f"imagefolder:{root}")
    from_tar = load_dataset(f"imagefolder:{archive}")
    assert from_tar.class_names == from_folder.class_names
    assert torch.equal(from_tar.train_images, from_folder.train_images)
    assert torch.equal(from_tar.test_labels, from_folder.test_labels)
    assert from_tar.name == f"imagefolder:{archive.resolve()}"
    from attnviz.data import portable_dataset_name

    assert portable_dataset_name(from_tar.name) == "imagefolder:pets.tar.gz"  # what shipped cards carry


def test_imagefolder_zip(tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for rel, data in _split_tree().items():
            zf.writestr(rel, data)
        zf.writestr("README.txt", b"ignored: not an image")
    data = load_dataset(f"imagefolder:{archive}")
    assert data.class_names == ["cat", "dog"] and data.n_train == 6 and data.n_test == 2


def _tar_with(archive: Path, add) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        good = _png((1, 2, 3))
        for rel in ("train/a/0.png", "train/b/0.png", "test/a/0.png", "test/b/0.png"):
            info = tarfile.TarInfo(rel)
            info.size = len(good)
            tar.addfile(info, io.BytesIO(good))
        add(tar)
    return archive


def test_tar_member_escaping_the_folder_is_refused(tmp_path):
    def add(tar):
        payload = _png((0, 0, 0))
        info = tarfile.TarInfo("../escape/a/evil.png")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    archive = _tar_with(tmp_path / "evil.tar.gz", add)
    with pytest.raises(DatasetError, match="outside its folder"):
        load_dataset(f"imagefolder:{archive}")
    assert not (tmp_path / "escape").exists()


def test_tar_links_are_refused(tmp_path):
    def add(tar):
        info = tarfile.TarInfo("train/a/link.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    archive = _tar_with(tmp_path / "link.tar.gz", add)
    with pytest.raises(DatasetError, match="is a link"):
        load_dataset(f"imagefolder:{archive}")


def test_tar_file_count_cap(tmp_path, monkeypatch):
    monkeypatch.setattr("attnviz.data.folders.MAX_ARCHIVE_FILES", 3)
    archive = _tar_with(tmp_path / "many.tar.gz", lambda tar: None)
    with pytest.raises(DatasetError, match="more than 3 files"):
        load_dataset(f"imagefolder:{archive}")


def test_corrupt_archive_and_corrupt_image_are_named(tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    with pytest.raises(DatasetError, match="not a readable archive"):
        load_dataset(f"imagefolder:{broken}")

    layout = _split_tree()
    layout["train/dog/bad.png"] = b"\x89PNG\r\n\x1a\n truncated"
    root = _make_tree(tmp_path / "pets", layout)
    with pytest.raises(DatasetError, match=r"train/dog/bad\.png is not a readable image"):
        load_dataset(f"imagefolder:{root}")


def test_grey_folder_keeps_one_channel_and_mixed_sizes_are_resized(tmp_path):
    layout = {
        "train/a/0.png": _png(10, (8, 8), "L"),
        "train/b/0.png": _png(200, (12, 10), "L"),
        "test/a/0.png": _png(10, (8, 8), "L"),
        "test/b/0.png": _png(200, (8, 8), "L"),
    }
    data = load_dataset(f"imagefolder:{_make_tree(tmp_path / 'grey', layout)}")
    assert data.in_chans == 1
    assert data.train_images.shape == (2, 1, 32, 32)  # sizes differed -> every image at 32x32
    assert data.train_images[1].float().mean().item() == pytest.approx(200, abs=1)


def test_match_channels():
    grey = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 1], grey[:, 0])
    back = match_channels(rgb, 1)  # luma of an equal-channel image is the grey value itself
    assert torch.equal(back, grey)
    assert match_channels(rgb, 3) is rgb
    with pytest.raises(DatasetError):
        match_channels(grey, 4)


def test_preprocess_and_stats():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images)
    normalised = preprocess(images, mean, std)
    assert normalised.dtype == torch.float32
    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_subset_is_per_class_and_keeps_statistics():
    data = load_dataset("sample")
    small = data.subset(train_per_class=5, test_per_class=2)
    assert isinstance(small, ImageDataset)
    assert small.train_labels.bincount().tolist() == [5] * 10
    assert small.test_labels.bincount().tolist() == [2] * 10
    assert small.mean == data.mean and small.class_names == data.class_names
    assert small.card_fields()["input_size"] == [32, 32]


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_offline_named_dataset_says_where_to_put_files(tmp_path, name):
    root = tmp_path / "empty-root"
    with pytest.raises(DatasetError) as info:
        load_dataset(name, data_root=root, download=False)
    message = str(info.value)
    assert str(root) in message
    expected_file = "cifar-10-python.tar.gz" if name == "cifar10" else "MNIST/raw"
    assert expected_file in message
    assert "\n" not in message


def test_offline_env_disables_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_OFFLINE", "1")
    with pytest.raises(DatasetError, match="downloading is off"):
        load_dataset("cifar100")
    assert str(tmp_path / "data") in str(pytest.raises(DatasetError, load_dataset, "cifar100").value)


def test_bad_names():
    with pytest.raises(DatasetError, match="Unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("imagefolder:/no/such/folder")
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("imagefolder:")
