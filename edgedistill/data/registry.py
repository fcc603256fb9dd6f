"""The dataset registry: every reader registers itself here under its name.

A reader turns files into a :class:`SourceData` (the dataset's own train and
test sets, plus a validation set only where the files define one); splitting
and subsetting are done once, for all readers, by ``load_dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgedistill.data.types import DataSpec, ImageDataset
from edgedistill.utils.names import Registry


@dataclass
class SourceData:
    train: ImageDataset
    test: ImageDataset
    spec: DataSpec
    val: ImageDataset | None = None


class Reader(Protocol):
    def __call__(self, data_dir: Path | None, *, download: bool, image_size: int | None) -> SourceData:
        """Read the dataset from ``data_dir`` (or its default places); ``image_size``
        overrides the model input size where the dataset allows it."""
        ...


DATASETS: Registry[Reader] = Registry("dataset")
