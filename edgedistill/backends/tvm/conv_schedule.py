"""A direct-convolution schedule for TVM's conv kernels: the space MetaSchedule tunes them in, and
the default schedule of every conv kernel nothing tuned.

**Why.** TVM 0.27's CPU pipeline schedules nothing by itself: a kernel without a tuning record is
compiled as written, one thread, scalar loops (untuned ResNet-20 32×32 teacher: 48 ms). And
MetaSchedule's generic CPU rules (multi-level tiling of every loop) need far more trials than a
small machine gives: at 256 trials for a whole network (~16 per task) its best record for the fused
shift kernel of the 64-channel 56×56 block took 4.9 ms, where this template takes 0.3-0.5 ms, and
its ResNet-20 teacher (1.8 ms) was slower than this template's untuned default (1.0 ms). Measured
2026-12-03 on this 2-core AVX-512 host, interleaved.

**The template** (:func:`schedule_conv`), for a kernel whose reduction block computes a
channels-last output ``(n, y, x, o)`` (``conv2d_nhwc``, ``group_conv2d_nhwc`` — depthwise
included — and the fused ``shift_conv2d``; the CPU graph is NHWC, see
:mod:`edgedistill.backends.tvm.layout`):

* each output tile is accumulated in a local buffer (``cache_write``); the bias, residual add and
  ReLU Relax fused behind the conv are inlined into its write-back;
* ``y``, ``x`` and ``o`` are split into (outer, inner) without a tail (a tail predicate stops LLVM
  vectorising); the reduction runs between the outer and inner loops, and the inner ones are the
  register tile: a vector of output channels times a patch of pixels, unrolled. A dense conv (HWIO
  weights) and the fused shift kernel load one weight vector per step and broadcast one input
  pixel per accumulator; a depthwise conv loads a vector of input channels per pixel. Neither a
  stride (the 7×7 stride-2 stem) nor rows of 7 or 14 pixels waste vector lanes, and the write-back
  (with its epilogue) stores whole vectors of channels;
* the outer (n, y, o) loops run in parallel, rows outside channels (a thread's consecutive tiles
  read the same input rows), and so does each stage before the conv (its zero border), when the
  kernel has the work for two threads (:func:`worth_parallel`).

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

SPACE = "edgedistill-direct-conv/4"
CONV_BLOCKS = ("conv2d_nhwc", "group_conv2d_nhwc", PRIMFUNC_NAME)
"""Reduction blocks the template schedules: TOPI's NHWC convs (LegalizeOps) and the fused shift kernel."""
MAX_INNER = {"y": 8, "x": 16, "o": 64}
"""Largest inner tile the search may sample per axis."""
DEFAULT_ACCUMULATORS = 16
"""Vector accumulators of a default tile (AVX-512 and NEON have 32 vector registers)."""
DEFAULT_CHANNEL_VECTORS = 2
"""Vectors of output channels in a default tile (then 8 pixels): of 2×8 pixels × 1 vector, 8 × 2
and 4 × 4 tried on ResNet-18's 1×1 and 7×7 convs (2026-12-07), 8 pixels × 2 vectors was best or
within 5 % of it on each."""
PARALLEL_MIN_VECTOR_MACS = 64 * 1024
"""A kernel runs in parallel only with at least this much work, in vector multiply-adds (its
multiply-adds or loop iterations over the target's float32 lanes): below that, waking the thread
pool and waiting for it costs more than the second thread saves. Measured 2026-12-07 on this 2-core
AVX-512 host (16 lanes, so 1 M multiply-adds), ResNet-20 at 32×32 on 2 threads with bars of 1 K,
16 K, 64 K vector MACs and none parallel: shift student (kernels of 0.13-0.44 M MACs) 0.16, 0.16,
0.13, 0.14 ms; teacher (3×3 convs of 1.2-2.4 M) 0.42, 0.40, 0.41, 0.58 ms. With NEON's 4 lanes
the bar is 256 K multiply-adds."""
Tiler = Callable[[Any, str, Any, int], list[Any]]  # (schedule, axis name, loop, largest inner size) -> split factors


def conv_block(sch: Any) -> Any | None:
    """The one conv reduction block of ``sch``'s kernel, or None (not a conv kernel, or several)."""
    found = [block for block in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(block).name_hint in CONV_BLOCKS]
    return found[0] if len(found) == 1 else None


def vector_lanes(target: Any) -> int:
    """float32 lanes of ``target``'s vectors (16 with AVX-512, 4 with NEON)."""
    from tvm.target import codegen

    return max(1, codegen.llvm_get_vector_width(target) // 32)


def loop_work(sch: Any, block: Any) -> int:
    """Iterations of ``block``'s loop nest: multiply-adds, for a conv or a matmul."""
    work = 1
    for loop in sch.get_loops(block):
        work *= int(sch.get(loop).extent)
    return work


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
        schedule_conv(sch, conv, _default(sch, conv, lanes), lanes)
    except s_tir.ScheduleError:
        return None
    return sch


def schedule_conv(sch: Any, conv: Any, tile: Tiler, lanes: int) -> None:
    """Apply the template to the conv block ``conv`` of ``sch``, each (outer, inner) split by ``tile``;
    in parallel when the kernel has the work for it on a target with ``lanes`` float32 lanes
    (:func:`worth_parallel`)."""
    parallel = worth_parallel(loop_work(sch, conv), lanes)
    producers = sch.get_producers(conv)
    accumulate = sch.cache_write(conv, 0, "local")
    while consumers := sch.get_consumers(accumulate):  # bias, residual add, ReLU: into the write-back
        sch.reverse_compute_inline(consumers[0])
    limits = inner_limits(sch, conv)
    n, y, x, o, *reduction = sch.get_loops(conv)
    (y_out, y_in), (x_out, x_in), (o_out, o_in) = (sch.split(loop, tile(sch, name, loop, limits[name]))
                                                   for name, loop in (("y", y), ("x", x), ("o", o)))
    sch.reorder(n, y_out, o_out, x_out, *reduction, y_in, x_in, o_in)
    outer = sch.fuse(n, y_out, o_out)
    sch.unroll(y_in)
    sch.unroll(x_in)
    sch.vectorize(o_in)
    if parallel:
        sch.parallel(outer)
    # The write-back: its loops kept even where a tile size is 1, so that their number does not
    # depend on the sampled sizes (a trace whose instructions change their number of outputs cannot
    # be replayed with other sizes).
    sch.reverse_compute_at(accumulate, x_out, preserve_unit_loops=True)
    *_, wb_y, wb_x, wb_o = sch.get_loops(accumulate)
    sch.unroll(wb_y)
    sch.unroll(wb_x)
    sch.vectorize(wb_o)
    sch.decompose_reduction(conv, reduction[0])
    for producer in producers:  # the zero border (pad_temp, shift_pad): a stage of its own, in parallel
        loops = sch.get_loops(producer)
        if parallel and len(loops) >= 2:
            sch.parallel(sch.fuse(*loops[:2]))


def inner_limits(sch: Any, conv: Any) -> dict[str, int]:
    """Largest inner tile per axis: :data:`MAX_INNER`, and for a grouped conv a vector of output
    channels inside one group (its input channel is then one broadcast scalar; a depthwise conv,
    one input channel per output channel, reads a vector of input channels instead)."""
    block = sch.get(conv)
    limits = dict(MAX_INNER)
    per_group_in = int(block.iter_vars[-1].dom.extent)
    if block.name_hint == "group_conv2d_nhwc" and per_group_in > 1:
        groups = int(block.reads[0].source.shape[-1]) // per_group_in  # reads[0]: the padded input
        limits["o"] = max(1, min(limits["o"], int(block.iter_vars[3].dom.extent) // groups))
    return limits


def _sampled(sch: Any, name: str, loop: Any, limit: int) -> list[Any]:
    return sch.sample_perfect_tile(loop, n=2, max_innermost_factor=limit)


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def default_tiles(extents: dict[str, int], lanes: int, channel_limit: int) -> dict[str, int]:
    """The inner tile of the untuned default: :data:`DEFAULT_CHANNEL_VECTORS` vectors of output
    channels (fewer when the conv has fewer channels, or ``channel_limit`` says so) times a patch of
    pixels, about :data:`DEFAULT_ACCUMULATORS` vector accumulators in all: 32 channels × 8 pixels
    with AVX-512, 8 × 8 with NEON; rows of 7 give 7 pixels."""
    o = _largest_divisor(extents["o"], min(channel_limit, DEFAULT_CHANNEL_VECTORS * lanes))
    pixels = max(1, DEFAULT_ACCUMULATORS // max(1, o // lanes))
    x = _largest_divisor(extents["x"], pixels)
    y = _largest_divisor(extents["y"], max(1, pixels // x))
    return {"y": y, "x": x, "o": o}


def _default(sch: Any, conv: Any, lanes: int) -> Tiler:
    """The default tiles, as samples of the tuned space with their decisions fixed: the trace is a
    point of that space, which the search can start from and mutate (see tuning's seeding)."""
    _, y, x, o, *_ = sch.get_loops(conv)
    extents = {name: int(sch.get(loop).extent) for name, loop in (("y", y), ("x", x), ("o", o))}
    inner = default_tiles(extents, lanes, inner_limits(sch, conv)["o"])
    return lambda sch, name, loop, limit: sch.sample_perfect_tile(
        loop, n=2, max_innermost_factor=limit, decision=[extents[name] // inner[name], inner[name]])


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
