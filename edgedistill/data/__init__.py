"""Datasets as in-memory tensors, batch augmentation on tensors, and a sharded batch loader.

Entry points: ``load_dataset(name, ...)`` -> :class:`DataSplits`,
:class:`BatchTransform` (fit, crop, flip, normalise a uint8 batch on any device)
and :class:`BatchLoader` (shuffled, sharded batches of ``(x, y)``).
"""

from edgedistill.data.augment import BatchTransform
from edgedistill.data.datasets import DEFAULT_DATASET, dataset_names, load_dataset
from edgedistill.data.loader import BatchLoader
from edgedistill.data.types import DataSpec, DataSplits, ImageDataset

__all__ = [
    "DEFAULT_DATASET",
    "BatchLoader",
    "BatchTransform",
    "DataSpec",
    "DataSplits",
    "ImageDataset",
    "dataset_names",
    "load_dataset",
]
