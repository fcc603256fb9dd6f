"""One fused TE kernel for each shift → 1×1 conv of the CPU graph: no shifted copy in memory.

A shift student's layer is "move each channel by one pixel, then a 1×1 conv". In the ``onehot``
form of the cheap layers (what the export's ``fused`` form compiles, see
:mod:`edgedistill.export.lowering`) it reaches TVM's channels-last CPU graph
(:mod:`edgedistill.backends.tvm.layout`) as a depthwise ``conv2d`` whose constant HWIO weights
hold a single exact 1.0 per channel (possibly ``+ bias``), then the 1×1 ``conv2d``: two kernels,
the first writing a shifted copy of the activation for the second to read. :func:`fuse_shift_conv`
replaces each such chain (and a constant bias ``add`` right after the 1×1 conv) by one ``call_tir``
to a TE reduction that reads the shifted addresses directly::

    out[n, y, x, o] = Σ_c W[c, o] · X[n, y·s + oy(c), x·s + ox(c), c]   (+ b[o]; zero outside X)

where ``(oy(c), ox(c))`` is the read offset of channel ``c``. For the interleaved assignment of
:func:`edgedistill.cheap.modules.shift_directions` the reduction runs over (channel group, ky, kx),
so the offsets are loop indices; any other one-hot pattern reads them from a small int32 table
(correct, but ~9× slower: keep it for odd graphs). "Zero outside X" is a zero border written once
around X inside the kernel, as its own stage, so that no read needs a bounds test. The PrimFunc is
named ``shift_conv2d`` so that MetaSchedule's task (``fused_shift_conv2d_...`` once Relax fuses the
ReLU/residual add behind it) passes :data:`edgedistill.backends.tvm.tuning.TUNED_OPS`, and the
direct-conv template (:mod:`edgedistill.backends.tvm.conv_schedule`) schedules it like a conv.

History, measured on this 2-core AVX-512 host: with MetaSchedule's generic rules the fused kernel
lost to the plain depthwise + 1×1 kernels (ResNet-20 at 256 trials 0.42 against 0.31 ms,
2026-12-02); scheduled by the conv template it won (0.53 against 0.71 ms untuned, 2026-12-03), and
it is the export's ``fused`` form, which ``--lowering auto`` times against the others.

Depthwise (non one-hot) convs are left alone: fused with their 1×1 conv they would be recomputed
for every output channel (K² MACs per 1×1 MAC instead of per input element), so that fusion is not
attempted. :func:`find_shift_convs` proves a depthwise conv is a shift by its weights, exactly (all
zeros but a single exact 1.0 per channel). The trained form's shift (Pad + K² Slices + Concat) is
not fused. The GPU library of a Jetson target keeps the plain ops.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PRIMFUNC_NAME = "shift_conv2d"


@dataclass(frozen=True)
class ShiftConv:
    """One shift → 1×1 conv chain found in a Relax function."""

    data: Any  # relax.Var: the activation X (N, H, W, C) the shift reads
    weight: np.ndarray  # (O, C) of the 1×1 conv
    bias: np.ndarray | None  # (O,) everything constant added on the way, or None
    offsets: np.ndarray  # (C, 2) int: read offset (dy, dx) of each input channel
    stride: tuple[int, int]
    out_shape: tuple[int, int, int, int]  # (N, H, W, O)
    interleaved: tuple[int, int, int] | None  # (K, shifted channels, sign) when offsets are index arithmetic


# ---------------------------------------------------------------------------------------------
# Reading the Relax graph


def _op_name(expr: Any) -> str:
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return ""


def _shape(expr: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in expr.ty.shape)
    except (AttributeError, TypeError, ValueError):  # not a tensor of static shape
        return None


def _dtype(expr: Any) -> str:
    return str(getattr(expr.ty, "dtype", ""))


class _Graph:
    """Bindings of one Relax function: var → value, and how often each var is used."""

    def __init__(self, func: Any) -> None:
        from tvm import relax

        self.values: dict[Any, Any] = dict(relax.analysis.get_var2val(func))
        self.uses: dict[Any, int] = {}
        for value in [*self.values.values(), func.body.body]:
            for var in relax.analysis.free_vars(value) if not isinstance(value, relax.Var) else [value]:
                self.uses[var] = self.uses.get(var, 0) + 1

    def value(self, expr: Any) -> Any:
        """What ``expr`` is bound to (through var aliases), or ``expr`` itself."""
        from tvm import relax

        while isinstance(expr, relax.Var) and expr in self.values:
            expr = self.values[expr]
        return expr

    def constant(self, expr: Any) -> np.ndarray | None:
        """The value of a constant (or a reshape or transpose of one: ConvertLayout's weights), else None."""
        import tvm

        expr = self.value(expr)
        if isinstance(expr, tvm.ir.Constant):
            return expr.value.numpy()
        name = _op_name(expr)
        if name in ("relax.reshape", "relax.permute_dims"):
            inner = self.constant(expr.args[0])
            if inner is None:
                return None
            if name == "relax.permute_dims":
                axes = expr.attrs.axes
                return inner.transpose([int(a) for a in axes] if axes is not None else None)
            shape = _shape(expr)
            if shape is not None and math.prod(shape) == inner.size:
                return inner.reshape(shape)
        return None

    def single_use(self, var: Any) -> bool:
        return self.uses.get(var, 0) == 1


def _channel_bias(value: np.ndarray | None, channels: int) -> np.ndarray | None:
    """``value`` as a per-channel (C,) vector if it broadcasts over N, H, W of an NHWC tensor."""
    if value is None or value.size != channels or value.shape[-1] != channels:
        return None
    return value.reshape(channels).astype(np.float32)


def _bias_add(graph: _Graph, expr: Any, channels: int) -> tuple[Any, np.ndarray] | None:
    """``expr`` is ``add(t, b)`` or ``add(b, t)`` with a constant per-channel ``b``: (t, b)."""
    expr = graph.value(expr)
    if _op_name(expr) != "relax.add":
        return None
    for tensor, other in ((expr.args[0], expr.args[1]), (expr.args[1], expr.args[0])):
        bias = _channel_bias(graph.constant(other), channels)
        if bias is not None and graph.constant(tensor) is None:
            return tensor, bias
    return None


def _conv_attrs_ok(call: Any) -> bool:
    attrs = call.attrs
    return (str(attrs.data_layout) == "NHWC" and str(attrs.kernel_layout) == "HWIO" and str(attrs.out_layout) == "NHWC"
            and all(int(d) == 1 for d in attrs.dilation) and str(attrs.out_dtype or "") in ("", "float32", "void"))


def _pointwise(graph: _Graph, expr: Any) -> tuple[Any, np.ndarray, tuple[int, int]] | None:
    """``expr`` is a 1×1 conv2d with constant weights, no padding, one group: (input, W (O, C), stride)."""
    if _op_name(expr) != "relax.nn.conv2d" or not _conv_attrs_ok(expr) or int(expr.attrs.groups) != 1:
        return None
    weight = graph.constant(expr.args[1])  # HWIO
    if weight is None or weight.ndim != 4 or weight.shape[:2] != (1, 1) or any(int(p) for p in expr.attrs.padding):
        return None
    if _dtype(expr.args[0]) != "float32" or weight.dtype != np.float32:
        return None
    sy, sx = (int(s) for s in expr.attrs.strides)
    return expr.args[0], weight[0, 0].T, (sy, sx)


def one_hot_offsets(weight: np.ndarray, padding: tuple[int, int]) -> np.ndarray | None:
    """Read offsets (C, 2) of a depthwise kernel (C, 1, K, K) that is exactly one 1.0 per channel, else None."""
    if weight.ndim != 4 or weight.shape[1] != 1:
        return None
    flat = weight.reshape(weight.shape[0], -1)
    ones = flat == 1.0
    if not (np.all(ones.sum(axis=1) == 1) and np.all((flat == 0.0) | ones)):
        return None
    taps = ones.argmax(axis=1)
    k = weight.shape[3]
    return np.stack([taps // k - padding[0], taps % k - padding[1]], axis=1).astype(np.int64)


def _onehot_shift(graph: _Graph, expr: Any, channels: int) -> tuple[Any, np.ndarray, np.ndarray | None, tuple[int, int]] | None:
    """``expr`` is a one-hot depthwise conv2d (+ constant bias): (X, offsets, bias, stride)."""
    bias = None
    added = _bias_add(graph, expr, channels)
    if added is not None:
        expr, bias = added
    call = graph.value(expr)
    if _op_name(call) != "relax.nn.conv2d" or not _conv_attrs_ok(call) or int(call.attrs.groups) != channels:
        return None
    weight = graph.constant(call.args[1])  # HWIO: (K, K, 1, C)
    if weight is None or weight.ndim != 4 or weight.shape[3] != channels:
        return None
    weight = weight.transpose(3, 2, 0, 1)  # (C, 1, K, K)
    top, left = int(call.attrs.padding[0]), int(call.attrs.padding[1])
    offsets = one_hot_offsets(weight, (top, left))
    if offsets is None:
        return None
    sy, sx = (int(s) for s in call.attrs.strides)
    return call.args[0], offsets, bias, (sy, sx)


def interleaved_layout(offsets: np.ndarray) -> tuple[int, int, int] | None:
    """(K, L, sign) when channel c < L reads offset sign·((c // K) mod K − K//2, c mod K − K//2) and the
    channels from L on are not moved (the layout of :func:`~edgedistill.cheap.modules.shift_directions`)."""
    channels = len(offsets)
    c = np.arange(channels)
    for k in (3, 5, 7, 9):
        r = k // 2
        shifted = channels // (k * k) * (k * k)
        if shifted == 0:
            continue
        for sign in (-1, 1):
            expect = np.zeros_like(offsets)
            expect[:shifted, 0] = sign * ((c[:shifted] // k) % k - r)
            expect[:shifted, 1] = sign * (c[:shifted] % k - r)
            if np.array_equal(expect, offsets):
                return k, shifted, sign
    return None


def find_shift_convs(func: Any) -> dict[Any, ShiftConv]:
    """Every one-hot shift → 1×1 conv chain of ``func``: {the binding var the fused kernel replaces: chain}."""
    graph = _Graph(func)
    found: dict[Any, ShiftConv] = {}
    post_bias = {}  # conv var -> (add var, bias)
    for var, value in graph.values.items():
        if _op_name(value) == "relax.add":
            shape = _shape(var)
            added = _bias_add(graph, value, shape[3]) if shape is not None and len(shape) == 4 else None
            if added is not None and added[0] in graph.values and graph.single_use(added[0]):
                post_bias[added[0]] = (var, added[1])
    for var, value in graph.values.items():
        pointwise = _pointwise(graph, value)
        out_shape = _shape(var)
        if pointwise is None or out_shape is None or len(out_shape) != 4:
            continue
        shifted, weight, stride = pointwise
        channels = weight.shape[1]
        shift = _onehot_shift(graph, shifted, channels)
        if shift is None:
            continue
        data, offsets, inner_bias, inner_stride = shift
        stride = (stride[0] * inner_stride[0], stride[1] * inner_stride[1])
        bias = None if inner_bias is None else weight.astype(np.float64) @ inner_bias.astype(np.float64)
        target = var
        if var in post_bias:
            target, extra = post_bias[var]
            bias = extra.astype(np.float64) if bias is None else bias + extra
        x_shape = _shape(data)
        if x_shape is None or len(x_shape) != 4 or _dtype(data) != "float32":
            continue
        found[target] = ShiftConv(
            data=data, weight=np.ascontiguousarray(weight, dtype=np.float32),
            bias=None if bias is None else bias.astype(np.float32), offsets=offsets, stride=stride,
            out_shape=out_shape, interleaved=interleaved_layout(offsets),
        )
    return found


# ---------------------------------------------------------------------------------------------
# The kernel


def kernel_weight(spec: ShiftConv) -> np.ndarray:
    """The 1×1 weights as the kernel reads them, output channel innermost (what the direct-conv
    template vectorises over): (C, O), or for the interleaved layout (G·K², O) with zero rows past C,
    so the channel groups (K² channels each, the tail one included) are whole."""
    weight = spec.weight
    if spec.interleaved is not None:
        k2 = spec.interleaved[0] ** 2
        channels = weight.shape[1]
        whole = -(-channels // k2) * k2
        weight = np.pad(weight, ((0, 0), (0, whole - channels))) if whole > channels else weight
    return np.ascontiguousarray(weight.T)


def shift_conv_te(x: Any, weight: Any, *extra: Any, spec: ShiftConv) -> Any:
    """The TE compute of one fused chain on an NHWC ``x``: ``extra`` is (bias?, offset table?) as te tensors.

    Interleaved layout: the reduction runs over (channel group g, ky, kx) with c = g·K² + ky·K + kx,
    so a channel's offset is (ky − K//2, kx − K//2)·sign with no division; the last group holds the
    unmoved tail channels (offset 0) and the zero channels of the border past C. Otherwise offsets
    come from a table.
    """
    from tvm import te, tirx

    extra = list(extra)
    bias = extra.pop(0) if spec.bias is not None else None
    table = extra.pop(0) if spec.interleaved is None else None
    height, width, channels = (int(d) for d in x.shape[1:])
    n_out, out_h, out_w, out_channels = spec.out_shape
    sy, sx = spec.stride
    zero = tirx.const(0.0, "float32")

    # The zero border (and zero channels up to whole groups), a stage of its own: no test per MAC.
    span = int(weight.shape[0])
    (top, left), (far_y, far_x) = -spec.offsets.min(axis=0).clip(max=0), spec.offsets.max(axis=0)
    bottom = max(0, (out_h - 1) * sy + int(far_y) - (height - 1))
    right = max(0, (out_w - 1) * sx + int(far_x) - (width - 1))
    top, left = int(top), int(left)
    border = te.compute(
        (x.shape[0], height + top + bottom, width + left + right, span),
        lambda n, i, j, c: tirx.if_then_else(
            tirx.all(c < channels, i >= top, i < top + height, j >= left, j < left + width),
            x[n, i - top, j - left, tirx.min(c, channels - 1)], zero),
        name="shift_pad",
    )

    def read(n: Any, c: Any, iy: Any, ix: Any) -> Any:
        return border[n, iy + top, ix + left, c]

    if table is not None:
        rc = te.reduce_axis((0, x.shape[3]), name="rc")  # int64, like the shapes Relax gives TE

        def body(n: Any, y: Any, xx: Any, o: Any) -> Any:
            c = rc.var
            dy, dx = table[c, 0].astype("int64"), table[c, 1].astype("int64")
            return te.sum(weight[c, o] * read(n, c, y * sy + dy, xx * sx + dx), axis=rc)
    else:
        k, shifted, sign = spec.interleaved
        r, k2 = k // 2, k * k
        groups = span // k2
        i64 = lambda v: tirx.const(v, "int64")  # noqa: E731
        rg = te.reduce_axis((i64(0), i64(groups)), name="rg")
        ry = te.reduce_axis((i64(0), i64(k)), name="ry")
        rx = te.reduce_axis((i64(0), i64(k)), name="rx")

        def body(n: Any, y: Any, xx: Any, o: Any) -> Any:
            g, ky, kx = rg.var, ry.var, rx.var
            c = g * k2 + ky * k + kx
            dy, dx = sign * (ky - r), sign * (kx - r)
            if shifted < channels:  # the last group: unmoved tail channels, then the border's zero channels
                moved = g < shifted // k2
                dy, dx = tirx.Select(moved, dy, i64(0)), tirx.Select(moved, dx, i64(0))
            return te.sum(weight[c, o] * read(n, c, y * sy + dy, xx * sx + dx), axis=[rg, ry, rx])

    out = te.compute((n_out, out_h, out_w, out_channels), body, name="shift_conv2d")
    if bias is None:
        return out
    return te.compute(out.shape, lambda n, y, xx, o: out[n, y, xx, o] + bias[o], name="shift_conv2d_bias")


def _rewriter(module: Any, plans: dict[Any, dict[Any, ShiftConv]]) -> Any:
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class ShiftConvFuser(PyExprMutator):
        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.plan: dict[Any, ShiftConv] = {}

        def visit_var_binding_(self, binding: Any) -> None:
            spec = self.plan.get(binding.var)
            if spec is None:
                return super().visit_var_binding_(binding)
            args = [self.visit_expr(spec.data), relax.const(kernel_weight(spec))]
            if spec.bias is not None:
                args.append(relax.const(spec.bias))
            if spec.interleaved is None:
                args.append(relax.const(spec.offsets.astype(np.int32)))
            call = self.builder_.call_te(functools.partial(shift_conv_te, spec=spec), *args, primfunc_name_hint=PRIMFUNC_NAME)
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(call, name_hint=str(binding.var.name)))
            return None

    return ShiftConvFuser(module)


def fuse_shift_conv(module: Any) -> tuple[Any, int]:
    """``module`` (channels-last) with each shift → 1×1 conv chain as one ``shift_conv2d`` kernel, and
    how many chains were fused (``module`` itself when there is none)."""
    from tvm import relax

    plans = {}
    for gvar, func in module.functions_items():
        if isinstance(func, relax.Function):
            found = find_shift_convs(func)
            if found:
                plans[gvar] = found
    if not plans:
        return module, 0
    fuser = _rewriter(module, plans)
    for gvar, found in plans.items():
        fuser.plan = found
        updated = relax.analysis.remove_all_unused(fuser.visit_expr(module[gvar]))
        fuser.builder_.update_func(gvar, updated)
    fused = relax.transform.DeadCodeElimination()(fuser.builder_.get())
    return fused, sum(len(found) for found in plans.values())


def fuse_for_compile(module: Any, enabled: bool, report: Callable[[str], None]) -> tuple[Any, dict[str, int] | None]:
    """What :func:`~edgedistill.backends.tvm.compile.compile_onnx` builds: (module, the manifest's
    ``fused`` counts, or None when fusion is off). Tuning needs nothing more: MetaSchedule keys its
    records by each kernel's TIR, so fused and plain kernels never share one."""
    if not enabled:
        return module, None
    fused, count = fuse_shift_conv(module)
    if count:
        report(f"fused {count} shift → 1×1 conv chains into one kernel each")
    return fused, {"shift_conv": count}
