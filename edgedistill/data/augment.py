"""Batch augmentation on tensors, so it runs wherever the batch is (CPU or GPU).

A uint8 batch (N, C, H, W) becomes float32 (N, C, S, S), normalised:
fit to the model input size S, then (training only) a random crop from the
zero-padded image and a random horizontal flip, both per sample and done in one
vectorised gather, then normalisation. Random numbers come from an explicit
``torch.Generator`` (drawn on the generator's device, then moved), so the same
seed gives the same augmentation on CPU and GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from edgedistill.data.types import DataSpec


@contextlib.contextmanager
def serial_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one thread.

    Per-batch data ops are small and memory-bound: threads gain nothing, and
    on a busy machine every parallel region waits for a descheduled worker
    (measured here: 20-30x slower with 2 threads than with 1 while other jobs ran).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_to_size(images: torch.Tensor, size: int, mode: str = "pad") -> torch.Tensor:
    """Make uint8 images ``size`` x ``size``.

    ``"pad"`` centres smaller images on a zero border (28 -> 32 keeps every
    pixel as it is); larger images, and every image in ``"resize"`` mode, are
    resized bilinearly (antialiased when shrinking).
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if mode == "pad" and h <= size and w <= size:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top))
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=h > size or w > size
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def random_crop_flip(
    images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random crop of the zero-padded images (same size out) and optional flip."""
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    width = w + 2 * padding
    span = 2 * padding + 1
    dy = torch.randint(0, span, (n,), generator=generator, device=generator.device).to(device)
    dx = torch.randint(0, span, (n,), generator=generator, device=generator.device).to(device)
    cols = torch.arange(w, device=device).expand(n, w)
    if hflip:
        flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(device)
        cols = torch.where(flip[:, None], (w - 1) - cols, cols)
    rows = dy[:, None] + torch.arange(h, device=device)  # (n, h)
    flat = (rows[:, :, None] * width + (cols + dx[:, None])[:, None, :]).reshape(n, 1, h * w)
    out = torch.gather(padded.reshape(n, c, -1), 2, flat.expand(n, c, h * w))
    return out.reshape(n, c, h, w)


class BatchTransform:
    """Fit + (train: crop + flip) + normalise a uint8 batch into float32 model input."""

    def __init__(
        self, spec: DataSpec, *, train: bool, crop_padding: int = 4, hflip: bool = True
    ) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.spec = spec
        self.train = train
        self.crop_padding = crop_padding
        self.hflip = hflip
        std = torch.tensor(spec.std, dtype=torch.float32)
        # x / 255 then (x - mean) / std, folded into one multiply-add.
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(spec.mean, dtype=torch.float32) / std).view(1, -1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self._scale.to(device), self._shift.to(device))
        return self._on_device[device]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"expected uint8 (N, {self.spec.in_channels}, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        augment = self.train and bool(self.crop_padding or self.hflip)
        if augment and generator is None:
            raise ValueError("training augmentation needs an explicit torch.Generator")
        scale, shift = self._constants(images.device)
        with serial_on_cpu(images.device):
            x = fit_to_size(images, self.spec.image_size, self.spec.fit)
            if augment and generator is not None:
                x = random_crop_flip(x, self.crop_padding, self.hflip, generator)
            return torch.addcmul(shift, x.float(), scale)
