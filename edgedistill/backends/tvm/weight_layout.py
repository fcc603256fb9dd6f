"""Dense conv weights stored output-channel innermost (HWIO), so that the direct-conv template can
vectorise over output channels with contiguous weight loads.

ONNX convs arrive as ``conv2d(NCHW data, OIHW weight)``. The template's *channels* register tile
(:mod:`edgedistill.backends.tvm.conv_schedule`) loads, at each reduction step, the weights of 16 or
more consecutive output channels: in OIHW those are C·K² floats apart (a gather), in HWIO they are
one vector. The weights are constants, so the transpose happens once here, at compile time, and the
graph's data layout (NCHW, what every other op and the bundle's caller see) does not change.

Only single-group convs with constant weights are rewritten: a depthwise or grouped conv reads one
input plane per output channel, which the template vectorises along the row instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HWIO = "HWIO"


def _rewritable(call: Any) -> bool:
    import tvm

    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d" and isinstance(call.args[1], tvm.ir.Constant)):
        return False
    attrs = call.attrs
    return (int(attrs.groups) == 1 and str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW"
            and str(attrs.out_layout) == "NCHW")


def conv_weights_hwio(module: Any) -> tuple[Any, int]:
    """``module`` with every rewritable conv2d's constant weight transposed to HWIO, and how many were."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    rewritten = [0]

    @mutator
    class HwioWeights(PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or not _rewritable(call):
                return call
            attrs = call.attrs
            weight = relax.const(np.ascontiguousarray(call.args[1].value.numpy().transpose(2, 3, 1, 0)))
            rewritten[0] += 1
            return relax.op.nn.conv2d(call.args[0], weight, strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
                                      groups=1, data_layout="NCHW", kernel_layout=HWIO, out_layout="NCHW", out_dtype=attrs.out_dtype)

    mutator_ = HwioWeights(module)
    for gvar, func in module.functions_items():
        if isinstance(func, relax.Function):
            mutator_.builder_.update_func(gvar, mutator_.visit_expr(func))
    return mutator_.builder_.get(), rewritten[0]
