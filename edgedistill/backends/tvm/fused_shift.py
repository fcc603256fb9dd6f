"""One fused TE kernel for each shift → 1×1 conv of a Relax module: no shifted copy in memory.

A shift student's layer is "move each channel by one pixel, then a 1×1 conv". Exported to ONNX
it reaches TVM as either

* ``onehot`` form: a depthwise ``conv2d`` whose constant weights hold a single 1 per channel
  (possibly ``+ bias``), then the 1×1 ``conv2d``;
* ``trained`` form: ``strided_slice`` (the shifted channels) → ``pad`` → ``reshape`` → K² 5-D
  ``strided_slice`` → ``concat`` → ``reshape`` (→ ``concat`` with the unshifted tail channels),
  then the 1×1 ``conv2d``.

Both write a shifted copy of the activation before the 1×1 conv reads it. :func:`fuse_shift_conv`
replaces each such chain (and a constant bias ``add`` right after the 1×1 conv) by one
``call_tir`` to a TE reduction that reads the shifted addresses directly::

    out[n, o, y, x] = Σ_c W[o, c] · X[n, c, y·s + oy(c), x·s + ox(c)]   (+ b[o]; zero outside X)

where ``(oy(c), ox(c))`` is the read offset of channel ``c``. For the interleaved assignment of
:func:`edgedistill.cheap.modules.shift_directions` the reduction runs over (channel group, ky, kx),
so the offsets are loop indices; any other one-hot pattern reads them from a small int32 table
(correct, but ~9× slower: keep it for odd graphs). "Zero outside X" is either a zero border
written once around X inside the kernel (``padded``, the default: a stage MetaSchedule may inline
into the reduction or compute per tile, and the per-read bounds test is gone, which it otherwise
cannot vectorise) or a bounds test on every read (``padded=False``); no K²-way shifted copy is
written either way. The PrimFunc is named
``shift_conv2d`` so that MetaSchedule's task (``fused_shift_conv2d_...`` once Relax fuses the
ReLU/residual add behind it) passes :data:`edgedistill.backends.tvm.tuning.TUNED_OPS`.

Measured 2026-12-02 (ResNet-20 32×32 shift student, onehot form, batch 1, this shared 2-core host,
one interleaved run, indicative; ms, 1 thread / 2 threads): onnxruntime 0.14 / 0.20 (its best
form, onehot); TVM untuned 1.12 plain, ~1.6 fused (separate run); 64 trials 0.48 / 0.50 plain,
0.78 / 0.53 fused; 256 trials 0.23 / 0.31 plain, 0.52 / 0.42 fused. MetaSchedule's best record
per kernel at 256 trials: a 64-channel 8×8 block 77 µs fused vs 17 + 2.4 µs for the 1×1 and the
depthwise kernels; 16 channels 32×32: 17 µs vs 9 + 4.7 µs. In isolation (one layer, 32 trials,
1 thread) it won twice (16 ch 32×32: 14 vs 23 µs; 64 ch 8×8: 13 vs 19 µs) and lost once with its
BN bias, residual add and ReLU fused behind it (25 vs 9.5 µs): at these budgets the schedule
search decides, and it searches the plain 1×1 conv (one reduction axis of 2ⁿ channels) better
than this kernel (three short reduction axes). Since 2026-12-03 conv kernels are scheduled by
:mod:`edgedistill.backends.tvm.conv_schedule` instead (tuned in its space, or its default tiles
untuned), and the fused form is the faster one: ResNet-20 untuned 0.53 ms fused against 0.71 plain
one-hot; ResNet-18 224×224 at 256 trials 46 → 13 ms. It is the export's ``fused`` form of the cheap
layers (:mod:`edgedistill.export.lowering`), which ``--lowering auto`` times against the others.

Depthwise (non one-hot) convs are left alone: fused with their 1×1 conv they would be recomputed
for every output channel (K² MACs per 1×1 MAC instead of per input element), so that fusion is not
attempted. :func:`find_shift_convs` proves a depthwise conv is a shift by its weights, exactly (all
zeros but a single exact 1.0 per channel). The GPU library of a Jetson target keeps the plain ops.
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

    form: str  # "onehot" | "trained"
    data: Any  # relax.Var: the activation X (N, C, H, W) the shift reads
    weight: np.ndarray  # (O, C) of the 1×1 conv
    bias: np.ndarray | None  # (O,) everything constant added on the way, or None
    offsets: np.ndarray  # (C, 2) int: read offset (dy, dx) of each input channel
    stride: tuple[int, int]
    out_shape: tuple[int, int, int, int]
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


def _ints(expr: Any) -> list[int]:
    return [int(field.value) for field in expr.fields]


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
        """The value of a constant (or a reshape of one), else None."""
        import tvm

        expr = self.value(expr)
        if isinstance(expr, tvm.ir.Constant):
            return expr.value.numpy()
        if _op_name(expr) == "relax.reshape":
            inner = self.constant(expr.args[0])
            shape = _shape(expr)
            if inner is not None and shape is not None and math.prod(shape) == inner.size:
                return inner.reshape(shape)
        return None

    def single_use(self, var: Any) -> bool:
        return self.uses.get(var, 0) == 1


def _channel_bias(value: np.ndarray | None, channels: int) -> np.ndarray | None:
    """``value`` as a per-channel (C,) vector if it broadcasts over N, H, W of an NCHW tensor."""
    if value is None or value.size != channels:
        return None
    shape = value.shape
    if value.ndim == 1 or (value.ndim in (3, 4) and shape[-3] == channels):
        return value.reshape(channels).astype(np.float32)
    return None


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
    return (str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW" and str(attrs.out_layout) == "NCHW"
            and all(int(d) == 1 for d in attrs.dilation) and str(attrs.out_dtype or "") in ("", "float32", "void"))


def _pointwise(graph: _Graph, expr: Any) -> tuple[Any, np.ndarray, tuple[int, int]] | None:
    """``expr`` is a 1×1 conv2d with constant weights, no padding, one group: (input, W (O, C), stride)."""
    if _op_name(expr) != "relax.nn.conv2d" or not _conv_attrs_ok(expr) or int(expr.attrs.groups) != 1:
        return None
    weight = graph.constant(expr.args[1])
    if weight is None or weight.ndim != 4 or weight.shape[2:] != (1, 1) or any(int(p) for p in expr.attrs.padding):
        return None
    if _dtype(expr.args[0]) != "float32" or weight.dtype != np.float32:
        return None
    sy, sx = (int(s) for s in expr.attrs.strides)
    return expr.args[0], weight[:, :, 0, 0], (sy, sx)


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
    weight = graph.constant(call.args[1])
    if weight is None or weight.shape[0] != channels:
        return None
    top, left = int(call.attrs.padding[0]), int(call.attrs.padding[1])
    offsets = one_hot_offsets(weight, (top, left))
    if offsets is None:
        return None
    sy, sx = (int(s) for s in call.attrs.strides)
    return call.args[0], offsets, bias, (sy, sx)


def _pad_before(module: Any, call: Any) -> tuple[int, int] | None:
    """(top, left) zero padding of a ``call_tir`` to the importer's ``pad`` PrimFunc on an NCHW tensor."""
    import tvm
    from tvm import s_tir, tirx

    gvar = call.args[0]
    if not isinstance(gvar, tvm.ir.GlobalVar) or not gvar.name_hint.startswith("pad") or gvar not in module.functions:
        return None
    func = module[gvar]
    sch = s_tir.Schedule(func)
    try:
        store = sch.get(sch.get_sblock("PadInput")).body
    except Exception:  # TVM's schedule error: no such block, not the importer's pad
        return None
    value = getattr(store, "value", None)
    if not (isinstance(value, tvm.ir.Call) and str(value.op.name) == "prim.if_then_else"):
        return None
    load, fill = value.args[1], value.args[2]
    if not isinstance(fill, tirx.FloatImm) or fill.value != 0.0 or not hasattr(load, "indices"):
        return None
    pads = []
    for index in load.indices:
        if isinstance(index, tirx.Var):
            pads.append(0)
        elif isinstance(index, tirx.Sub) and isinstance(index.a, tirx.Var) and isinstance(index.b, tirx.IntImm):
            pads.append(int(index.b.value))
        else:
            return None
    if len(pads) != 4 or pads[0] or pads[1]:
        return None
    return pads[2], pads[3]


def _trained_part(graph: _Graph, module: Any, expr: Any) -> tuple[Any, list[tuple[int, int, int]]] | None:
    """One channel range of the trained shift: (X, [(X channel, dy, dx) per channel of ``expr``])."""
    shape = _shape(expr)
    value = graph.value(expr)
    name = _op_name(value)
    if name == "relax.strided_slice":  # unshifted channels X[:, b:e]
        axes, begin = _ints(value.args[1]), _ints(value.args[2])
        strides = _ints(value.args[4]) if len(value.args) > 4 else [1]
        if axes != [1] or strides != [1] or begin[0] < 0 or shape is None:
            return None
        return value.args[0], [(begin[0] + c, 0, 0) for c in range(shape[1])]
    if name != "relax.reshape" or shape is None or len(shape) != 4:
        return None
    stacked = graph.value(value.args[0])  # (N, G, K², H, W) concat of the K² pieces
    if _op_name(stacked) != "relax.concat" or int(stacked.attrs.axis) not in (2, -3):
        return None
    pieces = list(stacked.args[0].fields)
    padded5 = None
    sources: list[tuple[int, int, int]] = []  # per index j along axis 2: (i, row begin, col begin)
    for piece in pieces:
        sliced = graph.value(piece)
        piece_shape = _shape(piece)
        if _op_name(sliced) != "relax.strided_slice" or piece_shape is None:
            return None
        if padded5 is None:
            padded5 = sliced.args[0]
        elif not sliced.args[0].same_as(padded5):
            return None
        axes, begin = _ints(sliced.args[1]), _ints(sliced.args[2])
        strides = _ints(sliced.args[4]) if len(sliced.args) > 4 else [1] * len(axes)
        if any(s != 1 for s in strides) or any(b < 0 for b in begin):
            return None
        start = dict.fromkeys((0, 1, 2, 3, 4), 0)
        for axis, b in zip(axes, begin):
            start[axis % 5] = b
        if start[0] or start[1]:
            return None
        sources += [(start[2] + j, start[3], start[4]) for j in range(piece_shape[2])]
    p5_shape = _shape(padded5) if padded5 is not None else None
    reshaped = graph.value(padded5) if padded5 is not None else None
    if p5_shape is None or len(p5_shape) != 5 or _op_name(reshaped) != "relax.reshape":
        return None
    n, groups, k2, _, _ = p5_shape
    pad_call = graph.value(reshaped.args[0])
    if _op_name(pad_call) != "relax.call_tir" or len(pad_call.args[1].fields) != 1:
        return None
    pad = _pad_before(module, pad_call)
    narrowed = pad_call.args[1].fields[0]
    narrowed_shape = _shape(narrowed)
    if pad is None or narrowed_shape is None or len(sources) != k2 or narrowed_shape[1] != groups * k2:
        return None
    if shape != (n, groups * k2, narrowed_shape[2], narrowed_shape[3]):
        return None
    first, data = 0, narrowed
    sliced = graph.value(narrowed)
    if _op_name(sliced) == "relax.strided_slice":
        axes, begin = _ints(sliced.args[1]), _ints(sliced.args[2])
        strides = _ints(sliced.args[4]) if len(sliced.args) > 4 else [1]
        if axes != [1] or strides != [1] or begin[0] < 0:
            return None
        first, data = begin[0], sliced.args[0]
    top, left = pad
    channels = []
    for g in range(groups):
        for i, row, col in sources:
            channels.append((first + g * k2 + i, row - top, col - left))
    return data, channels


def _trained_shift(graph: _Graph, module: Any, expr: Any, channels: int) -> tuple[Any, np.ndarray] | None:
    """``expr`` is the trained form's shift of some X with C = ``channels``: (X, offsets)."""
    value = graph.value(expr)
    parts = list(value.args[0].fields) if _op_name(value) == "relax.concat" and int(value.attrs.axis) in (1, -3) else [expr]
    data, mapped = None, []
    for part in parts:
        found = _trained_part(graph, module, part)
        if found is None:
            return None
        if data is None:
            data = found[0]
        elif not found[0].same_as(data):
            return None
        mapped += found[1]
    if data is None or _shape(data) is None or _shape(data)[1] != channels or len(mapped) != channels:
        return None
    if [src for src, _, _ in mapped] != list(range(channels)) or all(dy == 0 and dx == 0 for _, dy, dx in mapped):
        return None  # a channel permutation (or no shift at all): not the shift this kernel computes
    return data, np.array([(dy, dx) for _, dy, dx in mapped], dtype=np.int64)


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


def find_shift_convs(module: Any, func: Any) -> dict[Any, ShiftConv]:
    """Every shift → 1×1 conv chain of ``func``: {the binding var the fused kernel replaces: chain}."""
    graph = _Graph(func)
    found: dict[Any, ShiftConv] = {}
    post_bias = {}  # conv var -> (add var, bias)
    for var, value in graph.values.items():
        if _op_name(value) == "relax.add":
            shape = _shape(var)
            added = _bias_add(graph, value, shape[1]) if shape is not None and len(shape) == 4 else None
            if added is not None and added[0] in graph.values and graph.single_use(added[0]):
                post_bias[added[0]] = (var, added[1])
    for var, value in graph.values.items():
        pointwise = _pointwise(graph, value)
        out_shape = _shape(var)
        if pointwise is None or out_shape is None or len(out_shape) != 4:
            continue
        shifted, weight, stride = pointwise
        channels = weight.shape[1]
        bias = None
        shift = _onehot_shift(graph, shifted, channels)
        if shift is not None:
            form = "onehot"
            data, offsets, inner_bias, inner_stride = shift
            stride = (stride[0] * inner_stride[0], stride[1] * inner_stride[1])
            if inner_bias is not None:
                bias = weight.astype(np.float64) @ inner_bias.astype(np.float64)
        else:
            trained = _trained_shift(graph, module, shifted, channels)
            if trained is None:
                continue
            form = "trained"
            data, offsets = trained
        target = var
        if var in post_bias:
            target, extra = post_bias[var]
            bias = extra.astype(np.float64) if bias is None else bias + extra
        x_shape = _shape(data)
        if x_shape is None or len(x_shape) != 4 or _dtype(data) != "float32":
            continue
        found[target] = ShiftConv(
            form=form, data=data, weight=np.ascontiguousarray(weight, dtype=np.float32),
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


def shift_conv_te(x: Any, weight: Any, *extra: Any, spec: ShiftConv, padded: bool = True) -> Any:
    """The TE compute of one fused chain: ``extra`` is (bias?, offset table?) as te tensors.

    Interleaved layout: the reduction runs over (channel group g, ky, kx) with c = g·K² + ky·K + kx,
    so a channel's offset is (ky − K//2, kx − K//2)·sign with no division; the last group holds the
    unmoved tail channels (offset 0) and reads nothing past C. Otherwise offsets come from a table.
    """
    from tvm import te, tirx

    extra = list(extra)
    bias = extra.pop(0) if spec.bias is not None else None
    table = extra.pop(0) if spec.interleaved is None else None
    channels, height, width = (int(d) for d in x.shape[1:])
    n_out, out_channels, out_h, out_w = spec.out_shape
    sy, sx = spec.stride
    zero = tirx.const(0.0, "float32")

    def read_checked(n: Any, c: Any, iy: Any, ix: Any, valid: Any = None) -> Any:
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        return tirx.if_then_else(inside if valid is None else tirx.all(valid, inside), x[n, c, iy, ix], zero)

    if padded:  # zero border (and zero channels up to whole groups) as its own stage: no test per MAC
        span = int(weight.shape[0])
        (top, left), (far_y, far_x) = -spec.offsets.min(axis=0).clip(max=0), spec.offsets.max(axis=0)
        bottom = max(0, (out_h - 1) * sy + int(far_y) - (height - 1))
        right = max(0, (out_w - 1) * sx + int(far_x) - (width - 1))
        top, left = int(top), int(left)
        border = te.compute(
            (x.shape[0], span, height + top + bottom, width + left + right),
            lambda n, c, i, j: tirx.if_then_else(
                tirx.all(c < channels, i >= top, i < top + height, j >= left, j < left + width),
                x[n, tirx.min(c, channels - 1), i - top, j - left], zero),
            name="shift_pad",
        )

        def read_padded(n: Any, c: Any, iy: Any, ix: Any, valid: Any = None) -> Any:
            return border[n, c, iy + top, ix + left]

    read = read_padded if padded else read_checked

    if table is not None:
        rc = te.reduce_axis((0, x.shape[1]), name="rc")  # int64, like the shapes Relax gives TE

        def body(n: Any, o: Any, y: Any, xx: Any) -> Any:
            c = rc.var
            dy, dx = table[c, 0].astype("int64"), table[c, 1].astype("int64")
            return te.sum(weight[c, o] * read(n, c, y * sy + dy, xx * sx + dx), axis=rc)
    else:
        k, shifted, sign = spec.interleaved
        r, k2 = k // 2, k * k
        groups = int(weight.shape[0]) // k2
        i64 = lambda v: tirx.const(v, "int64")  # noqa: E731
        rg = te.reduce_axis((i64(0), i64(groups)), name="rg")
        ry = te.reduce_axis((i64(0), i64(k)), name="ry")
        rx = te.reduce_axis((i64(0), i64(k)), name="rx")

        def body(n: Any, o: Any, y: Any, xx: Any) -> Any:
            g, ky, kx = rg.var, ry.var, rx.var
            c = g * k2 + ky * k + kx
            dy, dx = sign * (ky - r), sign * (kx - r)
            valid = None
            if shifted < channels:  # the last group: unmoved tail channels, then columns past C
                moved = g < shifted // k2
                dy, dx = tirx.Select(moved, dy, i64(0)), tirx.Select(moved, dx, i64(0))
                valid = c < channels
            return te.sum(weight[c, o] * read(n, c, y * sy + dy, xx * sx + dx, valid), axis=[rg, ry, rx])

    out = te.compute((n_out, out_channels, out_h, out_w), body, name="shift_conv2d")
    if bias is None:
        return out
    return te.compute(out.shape, lambda n, o, y, xx: out[n, o, y, xx] + bias[o], name="shift_conv2d_bias")


def _rewriter(module: Any, plans: dict[Any, dict[Any, ShiftConv]]) -> Any:
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class ShiftConvFuser(PyExprMutator):
        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.plan: dict[Any, ShiftConv] = {}
            self.padded = True

        def visit_var_binding_(self, binding: Any) -> None:
            spec = self.plan.get(binding.var)
            if spec is None:
                return super().visit_var_binding_(binding)
            args = [self.visit_expr(spec.data), relax.const(kernel_weight(spec))]
            if spec.bias is not None:
                args.append(relax.const(spec.bias))
            if spec.interleaved is None:
                args.append(relax.const(spec.offsets.astype(np.int32)))
            call = self.builder_.call_te(functools.partial(shift_conv_te, spec=spec, padded=self.padded), *args, primfunc_name_hint=PRIMFUNC_NAME)
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(call, name_hint=str(binding.var.name)))
            return None

    return ShiftConvFuser(module)


def fuse_shift_conv(module: Any, *, padded: bool = True) -> tuple[Any, dict[str, int]]:
    """``module`` with each shift → 1×1 conv chain as one ``shift_conv2d`` kernel, and the counts
    ``{"shift_conv": N, "onehot": n1, "trained": n2}`` (``module`` itself when there is none)."""
    from tvm import relax

    plans = {}
    for gvar, func in module.functions_items():
        if isinstance(func, relax.Function):
            found = find_shift_convs(module, func)
            if found:
                plans[gvar] = found
    counts = {"shift_conv": 0, "onehot": 0, "trained": 0}
    if not plans:
        return module, counts
    fuser = _rewriter(module, plans)
    fuser.padded = padded
    for gvar, found in plans.items():
        fuser.plan = found
        updated = relax.analysis.remove_all_unused(fuser.visit_expr(module[gvar]))
        fuser.builder_.update_func(gvar, updated)
        for spec in found.values():
            counts["shift_conv"] += 1
            counts[spec.form] += 1
    fused = relax.transform.DeadCodeElimination()(fuser.builder_.get())
    return fused, counts


def fuse_for_compile(module: Any, enabled: bool, report: Callable[[str], None]) -> tuple[Any, dict[str, int] | None]:
    """What :func:`~edgedistill.backends.tvm.compile.compile_onnx` builds: (module, the manifest's
    ``fused`` counts, or None when fusion is off). Tuning needs nothing more: MetaSchedule keys its
    records by each kernel's TIR, so fused and plain kernels never share one."""
    if not enabled:
        return module, None
    fused, counts = fuse_shift_conv(module)
    if counts["shift_conv"]:
        forms = ", ".join(f"{n} {form}" for form, n in counts.items() if form != "shift_conv" and n)
        report(f"fused {counts['shift_conv']} shift → 1×1 conv chains into one kernel each ({forms} form)")
    return fused, {"shift_conv": counts["shift_conv"]}
