"""TVM's CPU code runs channels-last: activations NHWC, conv weights HWIO.

ONNX convs arrive NCHW. The direct-conv template (:mod:`edgedistill.backends.tvm.conv_schedule`)
vectorises over output channels; in NHWC those are contiguous in the output, in the residual it
adds and (HWIO) in the weights, so each tile is written back with vector stores. In NCHW each
tile had to be transposed into rows on its way out, and for a 1×1 conv, whose reduction is only
its input channels, that transpose cost as much as the multiply-adds. Relax's ``ConvertLayout``
rewrites the convs and carries the layout through the elementwise ops, the pooling and the mean;
only the network's input and the classifier's flatten are transposed, so the library's interface
(an NCHW input, the logits) does not change.

Measured 2026-12-07 on this 2-core AVX-512 host, 2 threads, ResNet-18 224×224 kernels scheduled
by the template, NCHW (HWIO weights, channel vectors) against NHWC: the 64 → 64 1×1 conv at 56×56
211 → 91 µs (onnxruntime's: ~100), the 7×7 stride-2 stem 920 → 662 µs, the 128 → 128 1×1 conv at
28×28 167 → 86 µs, the 512 → 512 1×1 at 7×7 134 → 99 µs.
"""

from __future__ import annotations

from typing import Any

CHANNELS_LAST = {"relax.nn.conv2d": ["NHWC", "HWIO"]}
"""ConvertLayout's desired layouts: (data, kernel) of each op it rewrites."""


def to_channels_last(module: Any) -> Any:
    """``module`` (NCHW, as imported from ONNX) with every conv2d NHWC/HWIO and the ops between
    them following; transposes only where the layout enters and leaves."""
    from tvm import relax

    return relax.transform.ConvertLayout(CHANNELS_LAST)(module)
