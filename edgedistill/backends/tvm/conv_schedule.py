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
  vectorising); the reduction runs between the outer and inner loops, and the inner ones (o and y
  unrolled, x vectorised) are the register tile;
* the outer (n, o, y) loops run in parallel, and so does each stage before the conv (its zero border).

**Tuned** (:func:`conv_space`): conv tasks search this template, the inner tile sizes sampled as
perfect tiles, which MetaSchedule's evolutionary search, cost model and tile-size mutator explore
like any other space, here or on a board. :data:`SPACE` names it in the tuning metadata, so records
searched in another space (an older template, MetaSchedule's own rules) are searched again and the
best of all applies. Other tasks (the classifier's matmul) keep MetaSchedule's rules.

**Seeded**: before a search, each conv task's default tiles are measured into its database (see
:mod:`edgedistill.backends.tvm.tuning`), so the search starts from them and the record applied is
never one measured slower than the untuned code.

**Untuned** (:func:`schedule_untuned`): every conv kernel that got no record (``--tune-trials 0``,
or fewer trials than tasks) gets this template with fixed tiles (:data:`DEFAULT_INNER`), so that
untuned code is multi-threaded and vectorised rather than naive; it is still labelled untuned.
Every library is parity-checked at export whatever scheduled it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgedistill.backends.tvm.fused_shift import PRIMFUNC_NAME

SPACE = "edgedistill-direct-conv/1"
CONV_BLOCKS = ("conv2d_nchw", "group_conv2d_nchw", PRIMFUNC_NAME)
"""Reduction blocks the template schedules: TOPI's NCHW convs (LegalizeOps) and the fused shift kernel."""
MAX_INNER = {"o": 16, "y": 4, "x": 16}
"""Largest inner tile the search may sample per axis."""
DEFAULT_INNER = {"o": 8, "y": 2, "x": 16}
"""Largest inner tile of the untuned default per axis (the best of a sweep of the 64-channel 56×56
fused block here was o 8, y 2, x 14: 14 is the largest divisor of 56 up to 16)."""
Tiler = Callable[[Any, str, Any], list[Any]]  # (schedule, axis name, loop) -> split factors


def conv_block(sch: Any) -> Any | None:
    """The one conv reduction block of ``sch``'s kernel, or None (not a conv kernel, or several)."""
    found = [block for block in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(block).name_hint in CONV_BLOCKS]
    return found[0] if len(found) == 1 else None


def is_conv_task(mod: Any) -> bool:
    """Whether a tuning task's module is a conv kernel the template schedules (tried at its default
    tiles: a kernel it does not fit keeps MetaSchedule's rules rather than failing the search)."""
    return default_schedule(mod) is not None


def default_schedule(mod: Any) -> Any | None:
    """``mod``'s conv kernel scheduled by the template at its default tiles, or None: not a conv
    kernel, or one the template does not fit (it stays as it was: slow, still correct)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    conv = conv_block(sch)
    if conv is None:
        return None
    try:
        schedule_conv(sch, conv, _default)
    except s_tir.ScheduleError:
        return None
    return sch


def schedule_conv(sch: Any, conv: Any, tile: Tiler) -> None:
    """Apply the template to the conv block ``conv`` of ``sch``, each (outer, inner) split by ``tile``."""
    producers = sch.get_producers(conv)
    accumulate = sch.cache_write(conv, 0, "local")
    while consumers := sch.get_consumers(accumulate):  # bias, residual add, ReLU: into the write-back
        sch.reverse_compute_inline(consumers[0])
    n, o, y, x, *reduction = sch.get_loops(conv)
    (o_out, o_in), (y_out, y_in), (x_out, x_in) = (sch.split(loop, tile(sch, name, loop)) for name, loop in (("o", o), ("y", y), ("x", x)))
    sch.reorder(n, o_out, y_out, x_out, *reduction, o_in, y_in, x_in)
    sch.parallel(sch.fuse(n, o_out, y_out))
    sch.unroll(o_in)
    sch.unroll(y_in)
    sch.vectorize(x_in)
    # (the write-back's loops are not vectorised: how many reverse_compute_at makes depends on the tile
    # sizes, unit extents get none, and a trace whose instructions change their number of outputs
    # cannot be replayed with other sampled sizes)
    sch.reverse_compute_at(accumulate, x_out)
    sch.decompose_reduction(conv, reduction[0])
    for producer in producers:  # the zero border (pad_temp, shift_pad): a stage of its own, in parallel
        loops = sch.get_loops(producer)
        if len(loops) >= 2:
            sch.parallel(sch.fuse(*loops[:2]))


def _sampled(sch: Any, name: str, loop: Any) -> list[Any]:
    return sch.sample_perfect_tile(loop, n=2, max_innermost_factor=MAX_INNER[name])


def _default(sch: Any, name: str, loop: Any) -> list[Any]:
    """The default tiles, as a sample of the tuned space with its decision fixed: the trace is a point
    of that space, which the search can start from and mutate (see tuning's seeding)."""
    extent = int(sch.get(loop).extent)
    inner = max(d for d in range(1, min(extent, DEFAULT_INNER[name]) + 1) if extent % d == 0)
    return sch.sample_perfect_tile(loop, n=2, max_innermost_factor=MAX_INNER[name], decision=[extent // inner, inner])


def schedule_sampled(sch: Any) -> None:
    """The tuning space of a conv task: the template with sampled tile sizes."""
    schedule_conv(sch, conv_block(sch), _sampled)


def conv_space() -> Any:
    """The template as a MetaSchedule space generator (the target's postprocessors and mutators)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.space_generator.ScheduleFn(schedule_sampled)


def schedule_untuned(mod: Any) -> tuple[Any, int]:
    """``mod`` (legalized and fused) with every conv kernel that nothing scheduled given the template
    at its default tiles, and how many were. A kernel the template cannot schedule stays as it was."""
    import tvm

    scheduled = 0
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
            continue
        sch = default_schedule(func)
        if sch is not None:
            mod[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            scheduled += 1
    return mod, scheduled
