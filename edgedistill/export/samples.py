"""Real input samples for parity checks and TensorRT INT8 calibration.

Samples go through the same evaluation transform as in training (fit to the
model size, normalise), so they are exactly what the deployed model will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.data import BatchLoader, BatchTransform, DataSpec, load_dataset
from edgedistill.errors import DataError, EdgeDistillError


@dataclass(frozen=True)
class Samples:
    inputs: np.ndarray
    """float32 (N, C, H, W), normalised."""
    source: str
    """Where they come from, recorded in the manifest (e.g. ``fashion-mnist test``)."""


def real_samples(
    data: dict, split: str, count: int, data_dir: str | None = None, seed: int = 0, allow_synthetic: bool = True
) -> Samples:
    """``count`` images of ``split`` ("train" or "test") of the dataset a checkpoint was trained on.

    If the dataset cannot be read here and ``allow_synthetic``, the samples are
    N(0, 1) noise in the normalised input space, and ``source`` says so plainly
    (fine for a parity check, never for INT8 calibration).
    """
    if count < 1:
        raise EdgeDistillError(f"{count} samples asked for", "ask for at least 1")
    spec = DataSpec(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"]), "class_names": tuple(data["class_names"])})
    try:
        splits = load_dataset(spec.name, data_dir, val_size=0, limit=count, seed=seed, image_size=spec.image_size)
    except DataError as exc:
        if not allow_synthetic:
            raise DataError(f"{exc.message} (needed for real {split} samples)", exc.hint) from exc
        rng = np.random.default_rng(seed)
        shape = (count, spec.in_channels, spec.image_size, spec.image_size)
        return Samples(rng.standard_normal(shape, dtype=np.float32), f"synthetic N(0,1): {spec.name} unavailable ({exc.message})")
    dataset = getattr(splits, split)
    batches = BatchLoader(dataset, max(len(dataset), 1), BatchTransform(spec, train=False))
    inputs = np.concatenate([x.numpy() for x, _ in batches]).astype(np.float32)
    return Samples(inputs, f"{spec.name} {split} ({len(inputs)} images)")
