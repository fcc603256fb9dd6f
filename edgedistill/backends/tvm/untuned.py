"""Default schedules for the CPU kernels that no tuning record covers.

TVM 0.27 schedules nothing on a CPU: a kernel without a tuning record compiles to scalar loops on
one thread. Each such kernel gets the first of these schedules that fits it (:data:`SCHEDULES`):

* ``conv``: the direct-convolution template at its default tiles
  (:mod:`edgedistill.backends.tvm.conv_schedule`);
* ``matmul``: a matmul whose weights are contiguous along its output (the classifier, after
  Relax folds the transposed ONNX Gemm weight): the output in vectors of :data:`MATMUL_VECTOR`,
  each accumulated in registers over the whole reduction, vectors in parallel;
* ``loops``: anything else (pooling, global mean, elementwise): its padding inlined, the outer
  spatial loops of each block in parallel, the innermost spatial loop left to LLVM's vectoriser,
  small reductions unrolled.

Like the conv template, a kernel too small to gain from a second thread runs on one
(:func:`~edgedistill.backends.tvm.conv_schedule.worth_parallel`).

Measured 2026-12-07 on this 2-core AVX-512 host, 2 threads, the ImageNet ResNet-18 kernels that
are not convs: the 3×3/2 max pooling 0.38 → 0.12 ms, the 512 → 1000 classifier 0.51 → 0.04 ms
(onnxruntime: 0.10 and 0.055 ms). Every library is parity-checked at export whatever scheduled it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgedistill.backends.tvm.conv_schedule import default_schedule as conv_default, loop_work, vector_lanes, worth_parallel

MATMUL_VECTOR = 8
"""Output elements per accumulator of the matmul schedule (best of 8, 40, 200 for the classifier)."""
UNROLL_REDUCTION = 64
"""Reductions of at most this many steps (a 3×3 window, a 7×7 mean) are unrolled by ``loops``."""
DATA_PARALLEL, REDUCTION = 0, 2  # tirx IterVar types


def _matmul(mod: Any, lanes: int) -> Any | None:
    """``mod``'s matmul, vectorised along the output, or None when it is not such a matmul."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == "matmul"]
    if len(blocks) != 1:
        return None
    block = blocks[0]
    loops = sch.get_loops(block)
    iters = sch.get(block).iter_vars
    if [int(iv.iter_type) for iv in iters] != [DATA_PARALLEL, DATA_PARALLEL, REDUCTION] or len(loops) != 3:
        return None
    j = iters[1].var
    if not any(len(read.region) == 2 and read.region[-1].min.same_as(j) for read in sch.get(block).reads):
        return None  # the weights are not contiguous along the output: a vector would gather
    extent = int(iters[1].dom.extent)
    vector = max(d for d in range(1, min(extent, MATMUL_VECTOR) + 1) if extent % d == 0)
    parallel = worth_parallel(loop_work(sch, block), lanes)
    try:
        accumulate = sch.cache_write(block, 0, "local")
        while consumers := sch.get_consumers(accumulate):  # the bias add: into the write-back
            sch.reverse_compute_inline(consumers[0])
        i, j_loop, k = loops
        j_out, j_in = sch.split(j_loop, [None, vector])
        sch.reorder(i, j_out, k, j_in)
        outer = sch.fuse(i, j_out)
        if parallel:
            sch.parallel(outer)
        sch.vectorize(j_in)
        sch.reverse_compute_at(accumulate, outer)
        sch.decompose_reduction(block, k)
    except s_tir.ScheduleError:
        return None
    return sch


def _loops(mod: Any, lanes: int) -> Any | None:
    """``mod`` with its padding inlined and each block's outer spatial loops in parallel where the
    block has the work for it (None when no block has loops in the plain order TOPI writes them:
    spatial, then reduction)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    for block in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        try:  # a pad or an elementwise producer: computed where it is read
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass
    scheduled = False
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
        spatial = kinds.count(DATA_PARALLEL)
        if len(loops) != len(kinds) or kinds != [DATA_PARALLEL] * spatial + [REDUCTION] * (len(kinds) - spatial) or not spatial:
            continue
        extents = [int(sch.get(loop).extent) for loop in loops]
        if worth_parallel(loop_work(sch, block), lanes):
            # keep a long innermost spatial loop out of the parallel one: it is what LLVM vectorises
            parallel = spatial - 1 if spatial > 1 and extents[spatial - 1] >= 8 else spatial
            sch.parallel(sch.fuse(*loops[:parallel]) if parallel > 1 else loops[0])
        reduction = loops[spatial:]
        steps = 1
        for extent in extents[spatial:]:
            steps *= extent
        if reduction and steps <= UNROLL_REDUCTION:
            for loop in reduction:
                sch.unroll(loop)
        scheduled = True
    return sch if scheduled else None


SCHEDULES: dict[str, Callable[[Any, int], Any | None]] = {"conv": conv_default, "matmul": _matmul, "loops": _loops}
"""Default schedules, tried in order: name -> (kernel module, float32 lanes -> a schedule, or None
when it does not fit)."""


def schedule_untuned(mod: Any, target: Any) -> tuple[Any, dict[str, int]]:
    """``mod`` (legalized and fused) with every kernel that nothing scheduled given the first default
    schedule that fits it for ``target``, and how many kernels each schedule got. A kernel no
    schedule fits stays as it was (slow, still correct)."""
    import tvm

    lanes = vector_lanes(target)
    counts = dict.fromkeys(SCHEDULES, 0)
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
            continue
        for name, schedule in SCHEDULES.items():
            sch = schedule(func, lanes)
            if sch is not None:
                mod[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                counts[name] += 1
                break
    return mod, {name: n for name, n in counts.items() if n}
