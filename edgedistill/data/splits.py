"""Seeded, class-stratified subsets: validation carving and ``limit`` for quick runs."""

from __future__ import annotations

import torch

from edgedistill.data.types import ImageDataset
from edgedistill.errors import DataError


def stratified_pick(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask selecting ``count`` samples, spread over classes in proportion.

    Each class gets ``count * n_class / n`` samples (largest remainders get the
    leftovers), drawn at random with ``generator``; all vectorised.
    """
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"cannot pick {count} of {n} samples")
    num_classes = int(labels.max()) + 1 if n else 0
    per_class = torch.bincount(labels, minlength=num_classes)
    exact = per_class.to(torch.float64) * count / max(n, 1)
    quota = exact.floor().to(torch.int64)
    leftover = count - int(quota.sum())
    if leftover:
        # Largest fractional part first; stable sort keeps ties in class order.
        order = torch.sort(exact - quota, descending=True, stable=True).indices
        quota[order[:leftover]] += 1
    # Random order, then grouped by class: the rank inside a class is random.
    perm = torch.randperm(n, generator=generator)
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    class_start = torch.cumsum(per_class, 0) - per_class
    rank = torch.arange(n) - class_start[labels[grouped]]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[grouped[rank < quota[labels[grouped]]]] = True
    return mask


def resolve_count(size: int | float, total: int, what: str) -> int:
    """Turn ``size`` (a count, or a fraction in [0, 1)) into a number of samples."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise DataError(f"{what} must be a count or a fraction, got {size!r}")
    if isinstance(size, float):
        if not 0.0 <= size < 1.0:
            raise DataError(f"{what} fraction {size} is outside [0, 1)", "use e.g. 0.1 for 10 %")
        size = round(size * total)
    if size < 0 or size >= max(total, 1):  # 0 is always allowed, else some training images must remain
        raise DataError(f"{what} {size} must be in [0, {total}) for {total} training images",
                        f"use a count below {total}, or a fraction like 0.1")
    return size


def carve_validation(
    train: ImageDataset, val_size: int | float, generator: torch.Generator
) -> tuple[ImageDataset, ImageDataset]:
    """Split ``train`` into (train, val) with a stratified random ``val_size``; order is kept."""
    count = resolve_count(val_size, len(train), "val_size")
    if count == 0:
        return train, ImageDataset.empty_like(train)
    mask = stratified_pick(train.labels, count, generator)
    return train.subset(torch.nonzero(~mask).squeeze(1)), train.subset(torch.nonzero(mask).squeeze(1))


def limit_dataset(data: ImageDataset, limit: int, generator: torch.Generator) -> ImageDataset:
    """A stratified random subset of at most ``limit`` samples (original order kept)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise DataError(f"limit must be a positive number of images, got {limit!r}")
    if limit >= len(data):
        return data
    mask = stratified_pick(data.labels, limit, generator)
    return data.subset(torch.nonzero(mask).squeeze(1))
