"""The in-memory dataset containers shared by readers, splitting, loading and training."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    """Raw images and labels held as tensors (uint8 pixels, not normalised or resized)."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        """The samples at ``indices`` (a copy, in the given order)."""
        return ImageDataset(self.images[indices], self.labels[indices])

    @classmethod
    def empty_like(cls, other: ImageDataset) -> ImageDataset:
        """A dataset with no samples and the same image shape as ``other``."""
        return cls(other.images[:0].clone(), other.labels[:0].clone())


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a dataset.

    ``mean``/``std`` are per channel in [0, 1] pixel units, computed on the raw
    training images. ``image_size`` is the model's input size; images of a
    different size are fitted to it by the batch transform (see ``fit``).
    ``fit`` is ``"pad"`` (zero-pad smaller images, resize larger ones) or
    ``"resize"`` (always bilinear resize; for tiny images such as 8x8 digits).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    fit: str = "pad"

    def __post_init__(self) -> None:
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"mean/std need {self.in_channels} values each")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.fit not in ("pad", "resize"):
            raise ValueError(f"fit must be 'pad' or 'resize', got {self.fit!r}")


@dataclass
class DataSplits:
    """Train / validation / test sets of one dataset and its spec."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    spec: DataSpec
