"""Fashion-MNIST (Zalando, MIT licence) from its official IDX files: the offline default.

Looked for in ``data_dir``, then where the Debian package ``dataset-fashion-mnist``
installs it, then in the download cache. 28x28 grayscale; the batch transform
pads it to the model input size (32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgedistill.data.download import download as fetch
from edgedistill.data.idx import read_idx
from edgedistill.data.paths import default_data_root
from edgedistill.data.registry import DATASETS, SourceData
from edgedistill.data.types import DataSpec, ImageDataset
from edgedistill.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Official checksums of the gzipped files (github.com/zalandoresearch/fashion-mnist).
FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Over all 60,000 training images' pixels (checked against the real data by the tests).
MEAN, STD = (0.2860,), (0.3530,)
MODEL_INPUT_SIZE = 32


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if all(_find(folder, stem) for stem in FILES):
            return folder
    return None


def _read_split(folder: Path, prefix: str) -> ImageDataset:
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{images_path} / {labels_path} are not uint8 image/label IDX files")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path} has label {labels.max()}, Fashion-MNIST has {len(CLASS_NAMES)} classes")
    return ImageDataset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).to(torch.int64))


@DATASETS.register("fashion-mnist")
def read_fashion_mnist(data_dir: Path | None, *, download: bool, image_size: int | None) -> SourceData:
    cache = default_data_root() / "fashion-mnist"
    candidates = [data_dir] if data_dir is not None else [DEBIAN_DIR, cache]
    folder = _complete_folder(candidates)
    if folder is None and download:
        folder = data_dir if data_dir is not None else cache
        for stem, md5 in FILES.items():
            fetch(BASE_URL + f"{stem}.gz", folder / f"{stem}.gz", md5)
    if folder is None:
        looked = ", ".join(str(c) for c in candidates)
        raise DataError(
            f"Fashion-MNIST not found (looked in {looked} for the four *-ubyte[.gz] IDX files)",
            "run `apt-get install dataset-fashion-mnist`, or pass --data-dir FOLDER holding the files, "
            "or --download where the network allows",
        )
    spec = DataSpec(
        name="fashion-mnist",
        num_classes=len(CLASS_NAMES),
        in_channels=1,
        image_size=image_size or MODEL_INPUT_SIZE,
        mean=MEAN,
        std=STD,
        class_names=CLASS_NAMES,
    )
    return SourceData(train=_read_split(folder, "train"), test=_read_split(folder, "t10k"), spec=spec)
