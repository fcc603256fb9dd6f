"""Cheap replacements for a standard K×K convolution.

Each one is "a cheap K×K spatial operation followed by a 1×1 convolution"
(Xie et al., 2019):

* :class:`DepthwiseSeparableConv2d` — K×K depthwise conv, then 1×1 conv;
* :class:`GroupConv2d` — K×K group conv with ``groups`` groups, then 1×1 conv;
* :class:`ShiftConv2d` — the parameter- and FLOP-free :class:`Shift`, then 1×1 conv.

The spatial op maps ``in_channels → in_channels``; the 1×1 conv maps
``in_channels → out_channels``. Each cheap conv keeps the stride of the conv it
replaces: on the spatial op for depthwise and group, and on the 1×1 conv for
shift (a shift cannot subsample). The paper's reference code differs: it runs a
downsampling block's first conv at full resolution and subsamples in the second
conv's 1×1, which costs 5–11 % more MACs (tests/test_models.py reproduces the
paper's figures with that wiring). Everything is built from plain
``nn.Conv2d``/``F.pad``/slicing so it exports to standard ONNX ops; only the
shift's training path computes the same values a faster way
(:func:`shift_channels_fast`).
"""

from __future__ import annotations

import functools

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


def _span(move: int, size: int) -> tuple[slice, slice]:
    """Destination and source index ranges of a zero-filled move by ``move`` along an axis of ``size``."""
    move = max(-size, min(size, move))
    return slice(max(move, 0), size + min(move, 0)), slice(max(-move, 0), size + min(-move, 0))


def _shift_by_copies(x: torch.Tensor, kernel_size: int, reverse: bool) -> torch.Tensor:
    """:func:`shift_channels` as K² strided copies into one zeroed output (any layout, any device).

    One pass over the data instead of two (pad, then concat) and no padded
    intermediate: about twice as fast as the export formulation in NCHW.
    """
    n, c, h, w = x.shape
    k2 = kernel_size * kernel_size
    shifted = c // k2 * k2
    sign = -1 if reverse else 1
    out = torch.zeros_like(x)
    out[:, shifted:] = x[:, shifted:]
    src = x[:, :shifted].view(n, c // k2, k2, h, w)
    dst = out[:, :shifted].view(n, c // k2, k2, h, w)
    for i, (dx, dy) in enumerate(shift_directions(kernel_size)):
        (rows_to, rows_from), (cols_to, cols_from) = _span(sign * dy, h), _span(sign * dx, w)
        dst[:, :, i, rows_to, cols_to] = src[:, :, i, rows_from, cols_from]
    return out


@functools.lru_cache(maxsize=64)
def _one_hot_kernel(
    channels: int, kernel_size: int, reverse: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Depthwise weights (C, 1, K, K) with a single 1 per channel at the tap its shift reads from."""
    r = kernel_size // 2
    sign = -1 if reverse else 1
    directions = shift_directions(kernel_size)
    k2 = len(directions)
    weight = torch.zeros(channels, 1, kernel_size, kernel_size)
    for ch in range(channels):
        dx, dy = directions[ch % k2] if ch < channels // k2 * k2 else (0, 0)
        weight[ch, 0, r - sign * dy, r - sign * dx] = 1.0
    return weight.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)


def _uses_one_hot_conv(x: torch.Tensor) -> bool:
    """Channels-last float32 on CPU: there a one-hot depthwise conv (oneDNN, vectorised over
    channels) beats the strided copies, which move one element at a time because a direction's
    channels lie K² apart (1.2 ms against 8 ms at 128×16×32×32, one thread). It is exact for
    finite values: each output is 1·x plus zeros in IEEE float32 — hence not under autocast or
    a lowered oneDNN fp32 precision, nor on CUDA, where TF32 may round."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and _onednn_conv_fp32_is_ieee()
    )


def _onednn_conv_fp32_is_ieee() -> bool:
    # The per-op fp32 precision setting appeared in torch 2.7; before it, oneDNN fp32 convs were always IEEE.
    conv = getattr(torch.backends.mkldnn, "conv", None)
    return getattr(conv, "fp32_precision", "none") in ("none", "ieee")


def shift_channels_fast(x: torch.Tensor, kernel_size: int, reverse: bool = False) -> torch.Tensor:
    """Same values as :func:`shift_channels`, computed the fastest way for ``x``'s layout (training only:
    the export keeps the Pad/Slice/Concat formulation)."""
    if x.shape[1] < kernel_size * kernel_size:
        return x
    if _uses_one_hot_conv(x):
        weight = _one_hot_kernel(x.shape[1], kernel_size, reverse, x.device, x.dtype)
        return F.conv2d(x, weight, padding=kernel_size // 2, groups=x.shape[1])
    return _shift_by_copies(x, kernel_size, reverse)


def _tracing() -> bool:
    """An export or compiler is recording the graph (which must stay Pad/Slice/Concat), even with grad on."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class _ShiftFunction(torch.autograd.Function):
    """The shift with a hand-written backward: the gradient of a zero-filled shift by
    (dx, dy) is the zero-filled shift by (−dx, −dy). Autograd's own backward
    through K² slices allocates and accumulates K² zero-padded gradients instead
    (~30% of a shift student's CPU training step). Both directions use
    :func:`shift_channels_fast`."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        ctx.kernel_size = kernel_size
        return shift_channels_fast(x, kernel_size)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return shift_channels_fast(grad, ctx.kernel_size, reverse=True), None


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
        if torch.is_grad_enabled() and x.requires_grad and not _tracing():
            return _ShiftFunction.apply(x, self.kernel_size)
        return shift_channels(x, self.kernel_size)  # inference and any export or trace: plain ops

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


class GroupConv2d(_SpatialThenPointwise):
    """K×K group conv with ``groups`` groups (stride, padding, padding mode, dilation of the original)
    → 1×1 conv that mixes the groups."""

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
        padding_mode: str = "zeros",
    ) -> None:
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        spatial = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, groups=groups, bias=False,
                            padding_mode=padding_mode)
        super().__init__(spatial, nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        self.groups = groups


class DepthwiseSeparableConv2d(GroupConv2d):
    """K×K depthwise conv (one group per channel) → 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=bias,
                         padding_mode=padding_mode)


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
