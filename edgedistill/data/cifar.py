"""CIFAR-10 and CIFAR-100 from the official python-pickle release.

Accepted layouts (``data_dir`` may be any of them; default: the download cache):
the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``), a
folder holding it, the official ``.tar.gz`` archive, or a folder holding that.
The archive is read member by member, never extracted to disk. Each batch is
a pickled dict: ``b'data'`` uint8 (N, 3072) as R, G, B planes of 32x32 row-major
pixels, labels under ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100),
and class names in the meta file (``b'label_names'`` / ``b'fine_label_names'``).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from edgedistill.data.download import download as fetch
from edgedistill.data.paths import default_data_root
from edgedistill.data.registry import DATASETS, SourceData
from edgedistill.data.safe_pickle import load_data_pickle
from edgedistill.data.stats import channel_stats
from edgedistill.data.types import DataSpec, ImageDataset
from edgedistill.errors import DataError

SIDE = 32
_FIX_HINT = "the files are corrupt or not the official python version; delete them and re-download (--download)"


@dataclass(frozen=True)
class CifarRelease:
    name: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarRelease(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
)
CIFAR100 = CifarRelease(
    name="cifar100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
)


def _locate(release: CifarRelease, root: Path) -> Path | None:
    """The extracted folder or the archive for ``release`` at or under ``root``."""
    if root.is_file():
        return root
    if (root / release.folder).is_dir():
        return root / release.folder
    if (root / release.meta_file).is_file():  # root is the extracted folder itself
        return root
    archive = root / release.archive
    return archive if archive.is_file() else None


def _iter_folder(folder: Path, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    for name in sorted(wanted):
        if not (folder / name).is_file():
            continue  # reported as missing by the caller
        with open(folder / name, "rb") as f:
            yield name, f


def _iter_archive(archive: Path, release: CifarRelease, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """Stream the wanted members out of the .tar.gz in one pass."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            folder, _, name = member.name.rpartition("/")
            if folder.endswith(release.folder) and name in wanted and member.isfile():
                f = tar.extractfile(member)
                assert f is not None  # isfile() members always have a file object
                yield name, f


def _read_members(source: Path, release: CifarRelease) -> dict[str, Any]:
    wanted = set(release.members)
    members = _iter_folder(source, wanted) if source.is_dir() else _iter_archive(source, release, wanted)
    loaded: dict[str, Any] = {}
    try:
        for name, f in members:
            loaded[name] = load_data_pickle(f)
    except Exception as exc:  # noqa: BLE001 - any failure to decode these bytes means a bad file
        raise DataError(f"cannot read {release.name} from {source}: {type(exc).__name__}: {exc}", _FIX_HINT) from exc
    missing = wanted - loaded.keys()
    if missing:
        raise DataError(f"{source} lacks {', '.join(sorted(missing))} of the {release.name} release", _FIX_HINT)
    return loaded


def _to_dataset(batches: list[Any], release: CifarRelease, source: Path) -> ImageDataset:
    images, labels = [], []
    for batch in batches:
        if not isinstance(batch, dict) or b"data" not in batch or release.label_key not in batch:
            raise DataError(f"{source}: a batch is not a dict with b'data' and {release.label_key!r}", _FIX_HINT)
        data = batch[b"data"]
        batch_labels = np.asarray(batch[release.label_key])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3 * SIDE * SIDE,):
            raise DataError(f"{source}: b'data' must be uint8 (N, {3 * SIDE * SIDE})", _FIX_HINT)
        if batch_labels.shape != (len(data),) or batch_labels.dtype.kind not in "iu":
            raise DataError(f"{source}: {len(data)} images but labels of shape {batch_labels.shape}", _FIX_HINT)
        if batch_labels.size and not 0 <= batch_labels.min() <= batch_labels.max() < release.num_classes:
            raise DataError(f"{source}: labels outside 0..{release.num_classes - 1}", _FIX_HINT)
        images.append(data.reshape(-1, 3, SIDE, SIDE))
        labels.append(batch_labels.astype(np.int64))
    return ImageDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def _class_names(meta: Any, release: CifarRelease, source: Path) -> tuple[str, ...]:
    names = meta.get(release.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != release.num_classes:
        raise DataError(f"{source}: meta file lacks {release.num_classes} {release.names_key!r}", _FIX_HINT)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_cifar(name: str, data_dir: Path | None, *, download: bool, image_size: int | None) -> SourceData:
    release = RELEASES[name]
    root = data_dir if data_dir is not None else default_data_root()
    source = _locate(release, root)
    if download and (source is None or source.is_file()):
        # Re-verifies an archive that is already there; fetches it when absent or wrong.
        source = fetch(release.url, root if root.is_file() else root / release.archive, release.md5)
    if source is None:
        raise DataError(
            f"{release.name} not found in {root} (looked for {release.folder}/ and {release.archive})",
            f"pass --data-dir pointing at either, or --download where the network allows ({release.url})",
        )
    loaded = _read_members(source, release)
    train = _to_dataset([loaded[n] for n in release.train_files], release, source)
    test = _to_dataset([loaded[n] for n in release.test_files], release, source)
    mean, std = channel_stats(train.images)
    spec = DataSpec(
        name=release.name,
        num_classes=release.num_classes,
        in_channels=3,
        image_size=image_size or SIDE,
        mean=mean,
        std=std,
        class_names=_class_names(loaded[release.meta_file], release, source),
    )
    return SourceData(train=train, test=test, spec=spec)


RELEASES = {release.name: release for release in (CIFAR10, CIFAR100)}
for _name in RELEASES:
    DATASETS.register(_name)(partial(read_cifar, _name))
