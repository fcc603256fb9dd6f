"""Per-channel mean and standard deviation of uint8 images."""

from __future__ import annotations

import torch

_CHUNK = 4096  # images per step: bounds the float64 temporary for large datasets


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and population std per channel over every pixel, in [0, 1] units.

    This is the statistic normalisation needs (the std of all pixels), not the
    mean of per-image stds that some published CIFAR constants use by mistake.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError("channel_stats needs a non-empty (N, C, H, W) tensor")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    # A constant channel would divide by zero when normalising.
    std = torch.where(std > 0, std, torch.ones_like(std) * 255.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
