"""MetaSchedule's design space for the fused shift → 1×1 conv kernel: a direct-convolution template.

MetaSchedule's generic CPU rules (multi-level tiling of every loop) search this kernel's three
short reduction axes badly: at 256 trials for a whole ResNet-18 (~20 per task) its best record for
the 64-channel 56×56 block took 4.9 ms, where a register-tiled direct convolution takes ~0.5 ms
(measured 2026-12-03, this 2-core AVX-512 host). So each fused task is given this template as its
space instead (:func:`shift_conv_space`), and MetaSchedule's evolutionary search, cost model and
tile-size mutator tune its tile sizes, here or on a board, like any other task:

* the write of each output tile goes through a local accumulator (``cache_write``); the bias,
  residual add and ReLU Relax fused behind the kernel are inlined into that write-back;
* loops ``(o, y, x)`` are split into (outer, inner) by sampled perfect tiles (no tail: a tail
  predicate stops LLVM vectorising); the reduction (channel group, ky, kx) runs between the outer
  and inner loops, the inner ones (o: unrolled, y: unrolled, x: vectorised) form the register tile;
* the outer (n, o, y) loops run in parallel, and so does the zero-border stage.

Every candidate is still built and timed by MetaSchedule and the library is parity-checked at export
like every artifact. :data:`SPACE` names this template in the tuning metadata, so a database tuned
with another space (an older template, or MetaSchedule's generic rules) tunes these tasks again and
keeps the best of all records.
"""

from __future__ import annotations

from typing import Any

from edgedistill.backends.tvm.fused_shift import PRIMFUNC_NAME

SPACE = "edgedistill-shift-conv/1"
REDUCTION_BLOCK = PRIMFUNC_NAME  # the TE compute's name: the reduction block of every fused task
BORDER_BLOCK = "shift_pad"
MAX_INNER = {"o": 16, "y": 4, "x": 16}  # largest inner tile per axis: 16×4×16 accumulators at most


def is_shift_conv_task(mod: Any) -> bool:
    """Whether a tuning task's module is a fused shift kernel (it holds the reduction block)."""
    from tvm import s_tir

    try:
        s_tir.Schedule(mod).get_sblock(REDUCTION_BLOCK)
    except Exception:  # TVM's ScheduleError: no such block
        return False
    return True


def schedule_shift_conv(sch: Any) -> None:
    """Apply the template to ``sch`` (a fused shift task), sampling its tile sizes."""
    conv = sch.get_sblock(REDUCTION_BLOCK)
    accumulate = sch.cache_write(conv, 0, "local")
    while consumers := sch.get_consumers(accumulate):  # bias, residual add, ReLU: into the write-back
        sch.reverse_compute_inline(consumers[0])
    n, o, y, x, *reduction = sch.get_loops(conv)
    tiles = {}
    for name, loop in (("o", o), ("y", y), ("x", x)):
        tiles[name] = sch.split(loop, sch.sample_perfect_tile(loop, n=2, max_innermost_factor=MAX_INNER[name]))
    (o_out, o_in), (y_out, y_in), (x_out, x_in) = tiles["o"], tiles["y"], tiles["x"]
    sch.reorder(n, o_out, y_out, x_out, *reduction, o_in, y_in, x_in)
    sch.parallel(sch.fuse(n, o_out, y_out))
    sch.unroll(o_in)
    sch.unroll(y_in)
    sch.vectorize(x_in)
    # (its loops are not vectorised: how many reverse_compute_at makes depends on the sampled tiles, unit
    # extents get none, and a trace whose instructions change their number of outputs cannot be replayed)
    sch.reverse_compute_at(accumulate, x_out)
    sch.decompose_reduction(conv, reduction[0])
    try:
        border = sch.get_sblock(BORDER_BLOCK)
    except Exception:  # fused with padded=False: no border stage
        return
    batch, channel, *_ = sch.get_loops(border)
    sch.parallel(sch.fuse(batch, channel))


def shift_conv_space() -> Any:
    """The template as a MetaSchedule space generator (the target's postprocessors and mutators)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.space_generator.ScheduleFn(schedule_shift_conv)
