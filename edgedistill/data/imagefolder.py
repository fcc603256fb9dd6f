"""ImageNet-style folders of JPEG/PNG files, decoded once and kept in memory.

Layout: ``root/train/<class>/*.jpg|png`` plus ``root/test/<class>/...`` or
``root/val/<class>/...`` as the test set (ImageNet's ``val`` is its de-facto test
set). With both ``val/`` and ``test/``, ``val/`` becomes the validation set;
otherwise the validation set is carved from ``train/``. Classes are the sorted
folder names of ``train/``.

Every image is resized (shorter side) and centre-cropped to ``image_size``
(default 224) and stored as uint8: 150 KB per image at 224 px, so this suits
small and medium folders, not full ImageNet (1.28 M images, ~190 GB); loading
refuses up front when the images would not fit in the free memory.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedistill.data.registry import DATASETS, SourceData
from edgedistill.data.stats import channel_stats
from edgedistill.data.types import DataSpec, ImageDataset
from edgedistill.errors import DataError

DEFAULT_IMAGE_SIZE = 224
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
_MEMORY_SHARE = 0.8  # at most this share of the free memory may hold the images

LAYOUT_HINT = "expected ROOT/train/<class>/*.jpg|png and ROOT/val/<class>/... or ROOT/test/<class>/..."


def _pillow() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise DataError("imagefolder needs Pillow to decode images", "pip install pillow") from exc
    return Image, ImageOps


def _list_split(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of one split; ``classes`` None means: define them from this folder."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes not in train/: {', '.join(unknown[:5])}", LAYOUT_HINT)
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        images = sorted(
            p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
        )
        files += images
        labels += [label] * len(images)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {folder}", LAYOUT_HINT)
    return files, labels, classes


def _check_memory(count: int, size: int) -> None:
    needed = count * 3 * size * size
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return  # not measurable here (non-POSIX): let it try
    if needed > _MEMORY_SHARE * free:
        raise DataError(
            f"{count} images at {size}x{size} need {needed / 2**30:.1f} GiB in memory, {free / 2**30:.1f} GiB are free",
            "imagefolder keeps every image in memory: use a smaller --image-size or a subset of the folder",
        )


def _decode(files: list[Path], size: int) -> np.ndarray:
    """Decode ``files`` into uint8 (N, 3, size, size) with a thread pool (Pillow releases the GIL)."""
    image_mod, ops = _pillow()
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)

    def load(i: int) -> None:
        try:
            with image_mod.open(files[i]) as img:
                img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size
                fitted = ops.fit(img.convert("RGB"), (size, size), method=image_mod.Resampling.BILINEAR)
                out[i] = np.asarray(fitted).transpose(2, 0, 1)
        except (OSError, ValueError, SyntaxError, image_mod.DecompressionBombError) as exc:  # unreadable file
            raise DataError(f"cannot decode image {files[i]}: {exc}", "remove or replace the file") from exc

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(load, range(len(files))))
    return out


def _dataset(files: list[Path], labels: list[int], size: int) -> ImageDataset:
    return ImageDataset(torch.from_numpy(_decode(files, size)), torch.tensor(labels, dtype=torch.int64))


@DATASETS.register("imagefolder")
def read_imagefolder(data_dir: Path | None, *, download: bool, image_size: int | None) -> SourceData:
    if data_dir is None:
        raise DataError("imagefolder needs a folder", f"pass --data-dir ROOT; {LAYOUT_HINT}")
    if download:
        raise DataError("imagefolder cannot be downloaded", "drop --download and pass --data-dir ROOT")
    if not (data_dir / "train").is_dir():
        raise DataError(f"{data_dir} has no train/ folder", LAYOUT_HINT)
    held_out = [data_dir / s for s in ("val", "test") if (data_dir / s).is_dir()]
    if not held_out:
        raise DataError(f"{data_dir} has neither val/ nor test/ to test on", LAYOUT_HINT)
    size = image_size or DEFAULT_IMAGE_SIZE
    train_files, train_labels, classes = _list_split(data_dir / "train", None)
    listed = [_list_split(folder, classes)[:2] for folder in held_out]
    _check_memory(len(train_files) + sum(len(f) for f, _ in listed), size)
    train = _dataset(train_files, train_labels, size)
    held = [_dataset(files, labels, size) for files, labels in listed]
    mean, std = channel_stats(train.images)
    spec = DataSpec(
        name="imagefolder",
        num_classes=len(classes),
        in_channels=3,
        image_size=size,
        mean=mean,
        std=std,
        class_names=tuple(classes),
    )
    # held is [val, test] when both folders exist, else [the one test set].
    return SourceData(train=train, test=held[-1], spec=spec, val=held[0] if len(held) == 2 else None)
