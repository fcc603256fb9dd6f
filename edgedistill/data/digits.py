"""scikit-learn's 1,797 real 8x8 handwritten digits: a tiny set for fast training-loop tests.

Pixel values 0..16 are scaled to 0..255. The train/test split is fixed (seeded,
stratified, 20 % test) so every run tests on the same images; the batch
transform upsamples the images to the model input size (32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgedistill.data.registry import DATASETS, SourceData
from edgedistill.data.splits import stratified_pick
from edgedistill.data.stats import channel_stats
from edgedistill.data.types import DataSpec, ImageDataset
from edgedistill.errors import DataError

TEST_FRACTION = 0.2
SPLIT_SEED = 0
MODEL_INPUT_SIZE = 32


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("the digits dataset needs scikit-learn", "pip install scikit-learn") from exc
    bunch = load_digits()
    return bunch.images, bunch.target


@DATASETS.register("digits")
def read_digits(data_dir: Path | None, *, download: bool, image_size: int | None) -> SourceData:
    # data_dir and download do not apply: the data ships inside scikit-learn.
    images, targets = _load_digits()
    pixels = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    full = ImageDataset(torch.from_numpy(pixels), torch.from_numpy(targets.astype(np.int64)))
    is_test = stratified_pick(
        full.labels, round(TEST_FRACTION * len(full)), torch.Generator().manual_seed(SPLIT_SEED)
    )
    train = full.subset(torch.nonzero(~is_test).squeeze(1))
    test = full.subset(torch.nonzero(is_test).squeeze(1))
    mean, std = channel_stats(train.images)
    spec = DataSpec(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=image_size or MODEL_INPUT_SIZE,
        mean=mean,
        std=std,
        class_names=tuple(str(d) for d in range(10)),
        fit="resize",
    )
    return SourceData(train=train, test=test, spec=spec)
