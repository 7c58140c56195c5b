"""Uploaded ImageFolder archives, checked before anything trains on them (:func:`check_archive`).

Size and member-count caps, no member that escapes its folder, no links (``attnviz.data``'s archive
reader refuses those), every image decodable, at least two classes. A good archive is kept,
content-addressed, in ``$ATTNVIZ_HOME/uploads`` for the training run that uses it.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from attnviz.errors import DatasetError
from attnviz.paths import attnviz_home

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_MEMBERS = 20_000
MAX_UPLOAD_UNCOMPRESSED = 256 * 1024 * 1024


def uploads_dir() -> Path:
    return attnviz_home() / "uploads"


@dataclass
class ArchiveSummary:
    path: str
    classes: list[str]
    n_train: int
    n_test: int
    image_size: tuple[int, int]
    in_chans: int

    @property
    def dataset(self) -> str:
        return f"imagefolder:{self.path}"


def check_archive(data: bytes, filename: str = "upload.zip", directory: str | Path | None = None) -> ArchiveSummary:
    """Check an uploaded ImageFolder ``.zip`` and keep it (content-addressed) for training.

    Raises :class:`DatasetError` with one sentence naming what failed: too big, too many members,
    a member outside its folder or a link (refused by ``attnviz.data``'s reader), an image that does
    not decode, fewer than two classes.
    """
    if not filename.lower().endswith(".zip"):
        raise DatasetError(f"{filename} is not a .zip archive (zip a folder of class sub-folders).")
    if not data:
        raise DatasetError(f"{filename} is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DatasetError(f"{filename} is larger than {MAX_UPLOAD_BYTES >> 20} MB.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DatasetError(f"{filename} is not a readable zip archive.") from err
    if len(infos) > MAX_UPLOAD_MEMBERS:
        raise DatasetError(f"{filename} has {len(infos):,} members; at most {MAX_UPLOAD_MEMBERS:,} are allowed.")
    if sum(info.file_size for info in infos) > MAX_UPLOAD_UNCOMPRESSED:
        raise DatasetError(f"{filename} would unpack to more than {MAX_UPLOAD_UNCOMPRESSED >> 20} MB.")

    folder = Path(directory) if directory is not None else uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(data).hexdigest()[:20] + ".zip")
    if not path.exists():
        tmp = path.with_suffix(".zip.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    from attnviz.data import load_dataset

    try:
        dataset = load_dataset(f"imagefolder:{path}")
    except DatasetError as err:
        raise DatasetError(str(err).replace(str(path), filename)) from err
    if dataset.num_classes < 2:
        raise DatasetError(f"{filename} holds {dataset.num_classes} class folder; at least two are needed.")
    return ArchiveSummary(path=str(path), classes=list(dataset.class_names), n_train=dataset.n_train,
                          n_test=dataset.n_test, image_size=tuple(dataset.input_size), in_chans=dataset.in_chans)
