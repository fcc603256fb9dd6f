"""MetaSchedule tuning with a trial budget and a persistent, reusable database.

A database lives in ``TUNING_DIR/<target>-<key>/`` where the key hashes the
model's graph (operators, attributes, shapes; not the weight values, which do
not change the kernels), the TVM target, the trial budget and the TVM version.
A second export of the same graph for the same target and budget finds the
directory and only re-applies it (about a second). Directories are written
atomically, so an interrupted tuning run leaves nothing that looks complete.

Two things differ from ``relax.get_pipeline("static_shape_tuning")``, which is
still what applies the database:

* the builder workers use :func:`_worker_build`, which skips MetaSchedule's
  ``import tvm.s_tir.tensor_intrin``: that import parses ~500 TVMScript
  functions, each calling ``inspect.stack()``, and takes 25-120 s per worker
  here (worse when torch is loaded), longer than the 30 s build timeout, so
  every candidate failed. fp32 CPU schedules use no tensor intrinsics;
* only convolution/matmul tasks are tuned (see ``TUNED_OPS``);
* a progress callback reports each batch of trials as it is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgedistill.errors import ToolchainError
from edgedistill.utils.atomic import atomic_directory, write_json_atomic
from edgedistill.utils.cache import cache_dir

META_FILE = "edgedistill-tuning.json"
# Only tasks with these in their name are tuned. The rest (pad/slice/concat of a
# shift, reshape, mean) have almost no schedule space: MetaSchedule finds one
# candidate, then loops ~2 min per round finding none, without ending the task.
TUNED_OPS = ("conv", "matmul", "dense")
BUILD_TIMEOUT_S = 120.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TuningResult:
    database: Path
    trials: int
    reused: bool
    tasks: int
    seconds: float


def default_tuning_dir() -> Path:
    return cache_dir("tvm-tuning")


def graph_hash(model: onnx.ModelProto, input_shape: Sequence[int]) -> str:
    """SHA-256 of the graph structure and input shape, ignoring weight values and metadata."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    for init in graph.initializer:
        dims, dtype, name = list(init.dims), init.data_type, init.name
        init.Clear()
        init.name, init.data_type = name, dtype
        init.dims.extend(dims)
    digest = hashlib.sha256(graph.SerializeToString(deterministic=True))
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    digest.update(json.dumps([list(map(int, input_shape)), opsets]).encode())
    return digest.hexdigest()


def database_dir(tuning_dir: Path, target_name: str, graph: str, tvm_target: Mapping[str, Any], trials: int, tvm_version: str) -> Path:
    key = json.dumps({"graph": graph, "target": tvm_target, "trials": trials, "tvm": tvm_version}, sort_keys=True)
    return Path(tuning_dir) / f"{target_name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _worker_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without its slow tensor-intrinsic import (see the module doc)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _progress_builder(total: int, report: Progress) -> Any:
    """A LocalBuilder that reports how many trials have been built so far."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import LocalBuilder, PyBuilder

    inner = LocalBuilder(f_build=_worker_build, max_workers=os.cpu_count() or 1, timeout_sec=BUILD_TIMEOUT_S)

    @derived_object
    class ProgressBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def build(self, build_inputs: list) -> list:
            results = inner.build(build_inputs)
            self.done += len(build_inputs)
            report(f"tuning: {min(self.done, total)}/{total} trials measured")
            return results

    return ProgressBuilder()


def _tune(mod: Any, target: Any, work_dir: Path, trials: int, report: Progress) -> int:
    """Run MetaSchedule on ``mod`` into ``work_dir``; returns the number of tuning tasks."""
    from tvm import relax, transform
    from tvm.s_tir import meta_schedule as ms

    with target:
        prepared = transform.Sequential(
            [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), relax.pipeline.zero_pipeline()]
        )(mod)
    names = [task.task_name for task in ms.relax_integration.extract_tasks(prepared, target)]
    tuned = [name for name in names if any(op in name for op in TUNED_OPS)] or names
    tasks = len(tuned)
    per_task = max(1, math.ceil(trials / tasks))
    report(f"tuning: {tasks} of {len(names)} tasks, {trials} trials (MetaSchedule; minutes on a small machine)")
    # MetaSchedule prints big tables at INFO to stdout; keep them in work_dir/logs only.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    ms.relax_integration.tune_relax(
        prepared,
        params={},
        target=target,
        work_dir=str(work_dir),
        max_trials_global=trials,
        max_trials_per_task=per_task,
        num_trials_per_iter=min(64, per_task),
        op_names=list(TUNED_OPS) if tuned is not names else None,
        builder=_progress_builder(trials, report),
    )
    return tasks


def _finished_tasks(db_dir: Path) -> int | None:
    """The task count of a finished database in ``db_dir``, or None if there is none (or it is unreadable)."""
    try:
        return int(json.loads((db_dir / META_FILE).read_text(encoding="utf-8"))["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def apply_tuning(
    mod: Any,
    target: Any,
    *,
    db_dir: Path,
    trials: int,
    can_tune: tuple[bool, str],
    report: Progress,
) -> tuple[Any, TuningResult]:
    """Tune ``mod`` into ``db_dir`` unless a finished database is there, then apply it.

    ``can_tune`` is (whether candidates can run on this machine, why not): a
    database made elsewhere is still reused when tuning itself is impossible.
    """
    from tvm import relax

    start = time.perf_counter()
    tasks = _finished_tasks(db_dir)
    reused = tasks is not None
    if reused:
        report(f"tuning: reusing database {db_dir}")
    else:
        ok, why = can_tune
        if not ok:
            raise ToolchainError(
                f"cannot tune here: MetaSchedule runs each candidate on the target and {why}",
                "export with --tune-trials 0 (tuning for another machine needs that machine over TVM RPC)",
            )
        with atomic_directory(db_dir, overwrite=True) as tmp:
            tasks = _tune(mod, target, tmp, trials, report)
            write_json_atomic(tmp / META_FILE, {"trials": trials, "tasks": tasks, "target": str(target), "seconds": time.perf_counter() - start})
    tuned = relax.get_pipeline("static_shape_tuning", total_trials=0, target=target, work_dir=str(db_dir))(mod)
    return tuned, TuningResult(db_dir, trials, reused, tasks, time.perf_counter() - start)
