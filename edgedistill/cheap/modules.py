"""Cheap replacements for a standard K×K convolution.

Each one is "a cheap K×K spatial operation followed by a 1×1 convolution"
(Xie et al., 2019):

* :class:`DepthwiseSeparableConv2d` — K×K depthwise conv, then 1×1 conv;
* :class:`GroupConv2d` — K×K group conv with ``groups`` groups, then 1×1 conv;
* :class:`ShiftConv2d` — the parameter- and FLOP-free :class:`Shift`, then 1×1 conv.

The spatial op maps ``in_channels → in_channels``; the 1×1 conv maps
``in_channels → out_channels``. Stride sits on the spatial op for depthwise and
group; the shift cannot subsample, so for shift the stride sits on the 1×1 conv
(as in the paper's reference code). Everything is built from plain
``nn.Conv2d``/``F.pad``/slicing so it exports to standard ONNX ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shift_directions(kernel_size: int) -> list[tuple[int, int]]:
    """The ``(dx, dy)`` move of each of the K² channel groups, in channel order.

    Channel ``c`` gets direction ``c mod K²``: ``dx = c mod K − K//2``,
    ``dy = ⌊c/K⌋ mod K − K//2``. For K = 3 that is the paper's interleaved
    assignment; index ``K²//2`` is the centre (no move).
    """
    r = kernel_size // 2
    k2 = kernel_size * kernel_size
    return [(i % kernel_size - r, (i // kernel_size) % kernel_size - r) for i in range(k2)]


def shift_channels(x: torch.Tensor, kernel_size: int, reverse: bool = False) -> torch.Tensor:
    """Apply the interleaved shift to ``x`` (or its inverse with ``reverse``).

    One zero pad, K² strided slices and a concat: these export to ONNX
    Pad/Slice/Concat. Channels beyond the last full group of K² stay in place.
    """
    k2 = kernel_size * kernel_size
    n, c, h, w = x.shape
    groups = c // k2
    if groups == 0:
        return x
    r = kernel_size // 2
    sign = -1 if reverse else 1
    # (N, G, K², H+2r, W+2r): the direction index is the fastest-varying channel index.
    padded = F.pad(x[:, : groups * k2], (r, r, r, r)).reshape(n, groups, k2, h + 2 * r, w + 2 * r)
    # out[y, x] = in[y - dy, x - dx]  ⇔  padded[y - dy + r, x - dx + r]
    # Slices that keep the K² dim (i:i+1) export to Slice + Concat, with no Gather/Unsqueeze.
    pieces = [
        padded[:, :, i : i + 1, r - sign * dy : r - sign * dy + h, r - sign * dx : r - sign * dx + w]
        for i, (dx, dy) in enumerate(shift_directions(kernel_size))
    ]
    out = torch.cat(pieces, dim=2).reshape(n, groups * k2, h, w)
    return out if groups * k2 == c else torch.cat([out, x[:, groups * k2 :]], dim=1)


class _ShiftFunction(torch.autograd.Function):
    """The shift with a hand-written backward: the gradient of a zero-filled shift by
    (dx, dy) is the zero-filled shift by (−dx, −dy). Autograd's own backward
    through K² slices allocates and accumulates K² zero-padded gradients instead
    (~30% of a shift student's CPU training step)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        ctx.kernel_size = kernel_size
        return shift_channels(x, kernel_size)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return shift_channels(grad, ctx.kernel_size, reverse=True), None


class Shift(nn.Module):
    """Move each channel by one pixel (for K = 3) in one of K² directions.

    Directions are interleaved by channel (see :func:`shift_directions`);
    channels beyond the last full group of K² are left in place and pixels
    shifted in from outside the image are zero. Parameter- and FLOP-free.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"shift kernel_size must be odd and positive, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _ShiftFunction.apply(x, self.kernel_size)
        return shift_channels(x, self.kernel_size)  # inference and ONNX export: plain ops

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


class _SpatialThenPointwise(nn.Module):
    """``spatial`` (in→in channels) followed by ``pointwise`` (1×1, in→out)."""

    def __init__(self, spatial: nn.Module, pointwise: nn.Conv2d) -> None:
        super().__init__()
        self.spatial = spatial
        self.pointwise = pointwise

    @property
    def in_channels(self) -> int:
        return self.pointwise.in_channels

    @property
    def out_channels(self) -> int:
        return self.pointwise.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.spatial(x))


class DepthwiseSeparableConv2d(_SpatialThenPointwise):
    """K×K depthwise conv (stride, padding, dilation of the original) → 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        spatial = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=False
        )
        super().__init__(spatial, nn.Conv2d(in_channels, out_channels, 1, bias=bias))


class GroupConv2d(_SpatialThenPointwise):
    """K×K group conv with ``groups`` groups → 1×1 conv that mixes the groups."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 4,
        bias: bool = False,
    ) -> None:
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        spatial = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, groups=groups, bias=False)
        super().__init__(spatial, nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        self.groups = groups


class ShiftConv2d(_SpatialThenPointwise):
    """:class:`Shift` → 1×1 conv carrying the stride (a shift cannot subsample)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(Shift(in_channels, kernel_size), nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias))
