"""A direct-convolution schedule for TVM's conv kernels: the space MetaSchedule tunes them in, and
the default schedule of every conv kernel nothing tuned.

**Why.** TVM 0.27's CPU pipeline schedules nothing by itself: a kernel without a tuning record is
compiled as written, one thread, scalar loops (untuned ResNet-20 32×32 teacher: 48 ms). And
MetaSchedule's generic CPU rules (multi-level tiling of every loop) need far more trials than a
small machine gives: at 256 trials for a whole network (~16 per task) its best record for the fused
shift kernel of the 64-channel 56×56 block took 4.9 ms, where this template takes 0.3-0.5 ms, and
its ResNet-20 teacher (1.8 ms) was slower than this template's untuned default (1.0 ms). Measured
2026-12-03 on this 2-core AVX-512 host, interleaved.

**The template** (:func:`schedule_conv`), for a kernel whose reduction block computes an NCHW
output ``(n, o, y, x)`` (``conv2d_nchw``, ``group_conv2d_nchw`` — depthwise included — and the fused
``shift_conv2d``):

* each output tile is accumulated in a local buffer (``cache_write``); the bias, residual add and
  ReLU Relax fused behind the conv are inlined into its write-back;
* ``o``, ``y`` and ``x`` are split into (outer, inner) without a tail (a tail predicate stops LLVM
  vectorising); the reduction runs between the outer and inner loops, and the inner ones are the
  register tile, in one of two modes (:func:`register_tile`):

  - *channels* (dense convs, whose weights are HWIO, and the fused shift kernel): a vector of output
    channels, times a patch of pixels unrolled; each step loads one weight vector and broadcasts one
    input pixel per accumulator, so neither strides (the stride-2 7×7 stem) nor rows of 7 or 14
    pixels waste vector lanes. The outer loops run rows outside channels, so that a thread's
    consecutive tiles read the same input rows;
  - *width* (depthwise and grouped convs: each channel reads its own input plane): a vector along
    the output row, times output channels and rows unrolled;

* the outer (n, o, y) loops run in parallel, and so does each stage before the conv (its zero
  border), when the kernel has the work for two threads (:func:`worth_parallel`).

**Tuned** (:func:`conv_space`): conv tasks search this template, the inner tile sizes sampled as
perfect tiles, which MetaSchedule's evolutionary search, cost model and tile-size mutator explore
like any other space, here or on a board. :data:`SPACE` names it in the tuning metadata, so records
searched in another space (an older template, MetaSchedule's own rules) are searched again and the
best of all applies. Other tasks (the classifier's matmul) keep MetaSchedule's rules.

**Seeded**: before a search, each conv task's default tiles are measured into its database (see
:mod:`edgedistill.backends.tvm.tuning`), so the search starts from them and the record applied is
never one measured slower than the untuned code.

**Untuned** (:func:`default_schedule`, applied by :mod:`edgedistill.backends.tvm.untuned`): every
conv kernel that got no record (``--tune-trials 0``, or fewer trials than tasks) gets this template
with fixed tiles (:func:`default_tiles`), so that untuned code is multi-threaded and vectorised
rather than naive; it is still labelled untuned.
Every library is parity-checked at export whatever scheduled it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgedistill.backends.tvm.fused_shift import PRIMFUNC_NAME

SPACE = "edgedistill-direct-conv/3"
CONV_BLOCKS = ("conv2d_nchw", "group_conv2d_nchw", PRIMFUNC_NAME)
"""Reduction blocks the template schedules: TOPI's NCHW convs (LegalizeOps) and the fused shift kernel."""
CHANNELS, WIDTH = "channels", "width"
"""The template's two register tiles: vectorised over output channels, or over the output row."""
MAX_INNER = {CHANNELS: {"o": 64, "y": 8, "x": 16}, WIDTH: {"o": 16, "y": 4, "x": 16}}
"""Largest inner tile the search may sample per axis."""
DEFAULT_ACCUMULATORS = 16
"""Vector accumulators of a default tile (AVX-512 and NEON have 32 vector registers)."""
PARALLEL_MIN_VECTOR_MACS = 64 * 1024
"""A kernel runs in parallel only with at least this much work, in vector multiply-adds (its
multiply-adds or loop iterations over the target's float32 lanes): below that, waking the thread
pool and waiting for it costs more than the second thread saves. Measured 2026-12-07 on this 2-core
AVX-512 host (16 lanes, so 1 M multiply-adds): every kernel of ResNet-20's shift student at 32×32
(0.13-0.6 M) ran faster on one thread (the network 0.275 -> 0.222 ms), its teacher's 3×3 convs
(2.4 M) on two. With NEON's 4 lanes the bar is 256 K multiply-adds."""
Tiler = Callable[[Any, str, Any], list[Any]]  # (schedule, axis name, loop) -> split factors


def conv_block(sch: Any) -> Any | None:
    """The one conv reduction block of ``sch``'s kernel, or None (not a conv kernel, or several)."""
    found = [block for block in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(block).name_hint in CONV_BLOCKS]
    return found[0] if len(found) == 1 else None


def vector_lanes(target: Any) -> int:
    """float32 lanes of ``target``'s vectors (16 with AVX-512, 4 with NEON)."""
    from tvm.target import codegen

    return max(1, codegen.llvm_get_vector_width(target) // 32)


def worth_parallel(work: int, lanes: int) -> bool:
    """Whether ``work`` multiply-adds (or loop iterations) are enough to run in parallel (see
    :data:`PARALLEL_MIN_VECTOR_MACS`)."""
    return work >= PARALLEL_MIN_VECTOR_MACS * lanes


def is_conv_task(mod: Any) -> bool:
    """Whether a tuning task's module is a conv kernel the template schedules (tried at its default
    tiles: a kernel it does not fit keeps MetaSchedule's rules rather than failing the search)."""
    return default_schedule(mod, lanes=1) is not None


def default_schedule(mod: Any, lanes: int) -> Any | None:
    """``mod``'s conv kernel scheduled by the template at its default tiles for a target with
    ``lanes`` float32 lanes, or None: not a conv kernel, or one the template does not fit (it stays
    as it was: slow, still correct)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    conv = conv_block(sch)
    if conv is None:
        return None
    try:
        schedule_conv(sch, conv, _default(sch, conv), lanes)
    except s_tir.ScheduleError:
        return None
    return sch


def register_tile(sch: Any, conv: Any) -> str:
    """:data:`CHANNELS` when the conv's weights are contiguous in the output channel (the innermost
    index of a weight read is the block's ``o``: dense convs with HWIO weights, see
    :mod:`~edgedistill.backends.tvm.weight_layout`, and the fused shift kernel), else :data:`WIDTH`
    (depthwise and grouped convs: each output channel reads its own input channel, so a vector over
    channels would gather)."""
    block = sch.get(conv)
    o = block.iter_vars[1].var
    return CHANNELS if any(len(read.region) >= 2 and read.region[-1].min.same_as(o) for read in block.reads) else WIDTH


def schedule_conv(sch: Any, conv: Any, tile: Callable[[str], Tiler], lanes: int) -> None:
    """Apply the template to the conv block ``conv`` of ``sch``, each (outer, inner) split by
    ``tile(mode)`` for the block's :func:`register_tile` mode; in parallel when the kernel has the
    work for it on a target with ``lanes`` float32 lanes (:func:`worth_parallel`)."""
    mode = register_tile(sch, conv)
    tiler = tile(mode)
    macs = 1
    for loop in sch.get_loops(conv):
        macs *= int(sch.get(loop).extent)
    parallel = worth_parallel(macs, lanes)
    producers = sch.get_producers(conv)
    accumulate = sch.cache_write(conv, 0, "local")
    while consumers := sch.get_consumers(accumulate):  # bias, residual add, ReLU: into the write-back
        sch.reverse_compute_inline(consumers[0])
    n, o, y, x, *reduction = sch.get_loops(conv)
    (o_out, o_in), (y_out, y_in), (x_out, x_in) = (sch.split(loop, tiler(sch, name, loop)) for name, loop in (("o", o), ("y", y), ("x", x)))
    if mode == CHANNELS:
        # Rows outside channels: a thread's consecutive tiles read the same input rows (cache hits).
        sch.reorder(n, y_out, o_out, x_out, *reduction, y_in, x_in, o_in)
        outer = sch.fuse(n, y_out, o_out)
        sch.unroll(y_in)
        sch.unroll(x_in)
        sch.vectorize(o_in)
    else:
        sch.reorder(n, o_out, y_out, x_out, *reduction, o_in, y_in, x_in)
        outer = sch.fuse(n, o_out, y_out)
        sch.unroll(o_in)
        sch.unroll(y_in)
        sch.vectorize(x_in)
    if parallel:
        sch.parallel(outer)
    # The write-back (with the epilogue) along the output row: its loops kept even where a tile size is
    # 1, so that their number does not depend on the sampled sizes (a trace whose instructions change
    # their number of outputs cannot be replayed with other sizes).
    sch.reverse_compute_at(accumulate, x_out, preserve_unit_loops=True)
    *_, wb_o, wb_y, wb_x = sch.get_loops(accumulate)
    sch.unroll(wb_o)
    sch.unroll(wb_y)
    sch.vectorize(wb_x)
    if mode == CHANNELS:  # the accumulator channel-innermost, so that its vectors are contiguous
        sch.transform_layout(conv, ("write", 0), lambda n, o, y, x: (n, y, x, o))
    sch.decompose_reduction(conv, reduction[0])
    for producer in producers:  # the zero border (pad_temp, shift_pad): a stage of its own, in parallel
        loops = sch.get_loops(producer)
        if parallel and len(loops) >= 2:
            sch.parallel(sch.fuse(*loops[:2]))


def _sampled(mode: str) -> Tiler:
    return lambda sch, name, loop: sch.sample_perfect_tile(loop, n=2, max_innermost_factor=MAX_INNER[mode][name])


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def default_tiles(mode: str, extents: dict[str, int]) -> dict[str, int]:
    """The inner tile of the untuned default: about :data:`DEFAULT_ACCUMULATORS` vector accumulators.

    Channels: 16 channels × a 2×8 patch of pixels, more channels when the rows are short (7 wide:
    32 × 1×7); width: 8 channels × 2 rows × up to 16 pixels (the best of a sweep of the 64-channel
    56×56 fused block, 2026-12-03). Measured 2026-12-05 on this 2-core AVX-512 host, 2 threads:
    the channels tile against the width tile, ResNet-18 stem 0.56 vs 1.16 ms, 512 channels 7×7
    0.84 vs 1.45, 16 channels 32×32 0.014 vs 0.030, 256 channels 14×14 0.50 vs 0.54.
    """
    if mode == WIDTH:
        return {name: _largest_divisor(extents[name], limit) for name, limit in (("o", 8), ("y", 2), ("x", 16))}
    x = _largest_divisor(extents["x"], 8)
    y = _largest_divisor(extents["y"], max(1, DEFAULT_ACCUMULATORS // x))
    o = _largest_divisor(extents["o"], 16 * max(1, DEFAULT_ACCUMULATORS // (x * y)))
    return {"o": o, "y": y, "x": x}


def _default(sch: Any, conv: Any) -> Callable[[str], Tiler]:
    """The default tiles, as samples of the tuned space with their decisions fixed: the trace is a
    point of that space, which the search can start from and mutate (see tuning's seeding)."""
    _, o, y, x, *_ = sch.get_loops(conv)
    extents = {name: int(sch.get(loop).extent) for name, loop in (("o", o), ("y", y), ("x", x))}

    def tiler(mode: str) -> Tiler:
        inner = default_tiles(mode, extents)
        return lambda sch, name, loop: sch.sample_perfect_tile(
            loop, n=2, max_innermost_factor=MAX_INNER[mode][name], decision=[extents[name] // inner[name], inner[name]])

    return tiler


def schedule_sampled(sch: Any, lanes: int) -> None:
    """The tuning space of a conv task for a target with ``lanes`` float32 lanes: the template with
    sampled tile sizes."""
    schedule_conv(sch, conv_block(sch), _sampled, lanes)


def conv_space(target: Any) -> Any:
    """The template as a MetaSchedule space generator for ``target`` (with the target's
    postprocessors and mutators)."""
    from tvm.s_tir import meta_schedule as ms

    lanes = vector_lanes(target)
    return ms.space_generator.ScheduleFn(lambda sch: schedule_sampled(sch, lanes))
