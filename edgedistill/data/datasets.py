"""``load_dataset``: read a registered dataset and split it into train / val / test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

# Imported for their registrations in DATASETS.
from edgedistill.data import cifar, digits, fashion_mnist, imagefolder  # noqa: F401
from edgedistill.data.registry import DATASETS
from edgedistill.data.splits import carve_validation, limit_dataset
from edgedistill.data.types import DataSplits
from edgedistill.errors import DataError

DEFAULT_DATASET = "fashion-mnist"


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | Path | None = None,
    *,
    val_size: int | float = 0.1,
    seed: int = 0,
    download: bool = False,
    limit: int | None = None,
    image_size: int | None = None,
) -> DataSplits:
    """Load dataset ``name`` into memory as uint8 tensors, split into train / val / test.

    ``val_size`` (a count, or a fraction of the training set; 0 for none) is
    carved class-stratified at random from the training set, unless the files
    define a validation set (an imagefolder with both val/ and test/).
    ``limit`` keeps a seeded, class-stratified subset of at most that many
    images of train (before carving) and of test. ``image_size`` overrides the
    model input size (and, for imagefolder, the stored size). The same
    arguments always give the same splits.
    """
    reader = DATASETS.get(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive number of pixels, got {image_size!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    source = reader(folder, download=download, image_size=image_size)
    spec = replace(source.spec, image_size=image_size) if image_size is not None else source.spec
    generator = torch.Generator().manual_seed(seed)
    train, test = source.train, source.test
    if limit is not None:
        train, test = limit_dataset(train, limit, generator), limit_dataset(test, limit, generator)
    if source.val is not None:
        val = source.val if limit is None else limit_dataset(source.val, limit, generator)
    else:
        train, val = carve_validation(train, val_size, generator)
    return DataSplits(train=train, val=val, test=test, spec=spec)
