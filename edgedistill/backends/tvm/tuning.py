"""MetaSchedule tuning with a trial budget and one persistent database per target.

**One database per (target, TVM version)**, shared by the teacher, every student and every later
export: ``TUNING_DIR/<target>-<key>/``, the key hashing the target's TVM dict (CPU, triple, cores)
and the TVM version. MetaSchedule's JSON database keys its records by the structural hash of each
task's TIR (its *workload*: operator, shapes, dtypes; never weight values), so two models with the
same conv shapes share their records, and a re-export finds everything already there::

    <target>-<key>/
        edgedistill-tuning.json   the commit: which generation is current, per-workload counts, runs
        gen-<id>/                 MetaSchedule's JSONDatabase (database_workload.json,
                                  database_tuning_record.json) of that generation
        .lock                     flock: exclusive to commit, shared to read
        .work/                    running tuning jobs (never read by anyone else)

**When a task is tuned.** A budget of N trials is spread over a model's tuning tasks (the conv /
matmul tasks, see ``TUNED_OPS``): each task's *share* is ``ceil(N / tasks)``. A task is done when
the database holds at least its share of measured candidates for its workload, or when a finished
run already asked for that share on it (MetaSchedule may stop a task short: the global budget ran
out, or its search space is exhausted; re-running it would find nothing new). Only the tasks that
are not done are tuned, each for what it lacks, about N trials in all (MetaSchedule checks its global
budget between batches, so it may measure up to one batch per task more; with fewer trials than tasks
some tasks get none); a bigger budget later tops the tasks up. A model whose tasks are all done only re-applies the database (about a second).

**Writes are safe.** A tuning run writes into its own directory under ``.work/``; only when it has
finished are its records merged with the current generation into a new ``gen-<id>/``, under the
exclusive lock, and ``edgedistill-tuning.json`` is replaced (atomically, last) to point at it. An
interrupted or failed run merges nothing: the database is as it was. A run in which every candidate
failed is an error, not a commit.

**Where candidates run.** Locally (MetaSchedule's LocalRunner), or on a board through a TVM RPC
tracker (:class:`BoardRunner`: MetaSchedule's ``RPCRunner``; each candidate is cross-compiled here
into a ``.so`` with the target's linker, uploaded and timed there). The board is checked before any
tuning starts, within seconds: an unreachable tracker, a key with no board, a busy board or a board
of another architecture is one error line. Timings of an emulated board mean nothing: the records
are correct schedules, their ranking is not evidence of anything, and the metadata says so.

Differences from ``relax.get_pipeline("static_shape_tuning")`` (which still applies the database):

* the builder workers use :func:`_worker_build`, which skips MetaSchedule's
  ``import tvm.s_tir.tensor_intrin``: that import parses ~500 TVMScript functions, each calling
  ``inspect.stack()``, and takes 25-120 s per worker here (worse when torch is loaded), longer than
  the build timeout, so every candidate failed. fp32 CPU schedules use no tensor intrinsics. In
  this process the import is still needed (the tune contexts make it); :func:`_fast_tensor_intrin`
  makes it take ~2 s instead of ~20-60 s;
* only convolution/matmul tasks are tuned (see ``TUNED_OPS``);
* conv tasks search our direct-conv template, and their default tiles are measured into the run's
  database first (:func:`_seed_default_tiles`): the search starts from them, and a tuned kernel is
  never one measured slower than its untuned default;
* a progress callback reports each batch of trials as it is built.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib
import inspect
import json
import linecache
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgedistill.backends.tvm.conv_schedule import SPACE as CONV_SPACE, conv_space, default_schedule, is_conv_task, vector_lanes
from edgedistill.errors import ToolchainError
from edgedistill.utils.atomic import write_json_atomic
from edgedistill.utils.cache import cache_dir

META_FILE = "edgedistill-tuning.json"
META_FORMAT = "edgedistill-tvm-tuning/2"
LOCK_FILE = ".lock"
WORK_DIR = ".work"
RECORDS_FILE = "database_tuning_record.json"
WORKLOADS_FILE = "database_workload.json"
# Only tasks with these in their name are tuned. The rest (pad/slice/concat of a
# shift, reshape, mean) have almost no schedule space: MetaSchedule finds one
# candidate, then loops ~2 min per round finding none, without ending the task.
TUNED_OPS = ("conv", "matmul", "dense")
BUILD_TIMEOUT_S = 120.0
FAILED_RUN_S = 1e9  # MetaSchedule records a candidate that failed to build or run as 1e10 s
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BoardRunner:
    """Measure candidates on a board of ``key`` behind the tracker at ``tracker``."""

    tracker: tuple[str, int]
    key: str
    session_timeout_s: float = 120.0
    """One candidate's session on the board (upload, load, time); a stuck candidate fails after it."""
    wait_s: float = 60.0
    """How long one candidate waits for the board to be free (another job may hold it)."""
    check_wait_s: float = 10.0
    """How long the check before tuning waits for a free board."""
    emulated: bool = False
    """Set by :func:`check_board`: the board is an emulator (qemu), its timings mean nothing."""

    def describe(self) -> str:
        where = f"board '{self.key}' via tracker {self.tracker[0]}:{self.tracker[1]}"
        return where + (" (emulated: timings meaningless)" if self.emulated else "")


@dataclass(frozen=True)
class TuningResult:
    database: Path
    """The target's database directory (shared by every model of the target)."""
    trials: int
    """The budget asked for this model."""
    reused: bool
    """True when nothing was measured for this model: every task was already done."""
    tasks: int
    """Tuning tasks of this model (conv/matmul kernels)."""
    seconds: float
    tuned_tasks: int = 0
    """Tasks measured in this call (0 when reused)."""
    measured: int = 0
    """Candidates measured in this call (failed ones included)."""
    failed: int = 0
    """Of those, candidates that failed to build or run."""
    measured_on: str = ""
    """Where this call's candidates ran ("" when reused)."""
    generation: str = ""
    """The database generation applied."""
    notes: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """What a bundle manifest records of it (beside ``trials`` and ``reused``)."""
        return {"database": self.database.name, "generation": self.generation, "tasks": self.tasks,
                "measured_now": self.measured, "failed_now": self.failed,
                "measured_on": self.measured_on or "earlier (database reused)"}


def default_tuning_dir() -> Path:
    return cache_dir("tvm-tuning")


def database_dir(tuning_dir: Path, target_name: str, tvm_target: Mapping[str, Any], tvm_version: str) -> Path:
    """The one database of a target: keyed by its TVM target dict and the TVM version."""
    key = json.dumps({"target": dict(tvm_target), "tvm": tvm_version}, sort_keys=True)
    return Path(tuning_dir) / f"{target_name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


# -- the database on disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(db_dir: Path, exclusive: bool) -> Iterator[None]:
    db_dir.mkdir(parents=True, exist_ok=True)
    with open(db_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_meta(db_dir: Path) -> dict[str, Any] | None:
    """The committed metadata, or None when there is no finished database (or it is unreadable)."""
    try:
        meta = json.loads((db_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or not isinstance(meta.get("generation"), str):
        return None
    if not (db_dir / meta["generation"] / RECORDS_FILE).is_file():
        return None
    return meta


def committed_records(db_dir: Path) -> Path | None:
    """The tuning-record file of the current generation, or None when nothing is committed."""
    meta = read_meta(db_dir)
    return db_dir / meta["generation"] / RECORDS_FILE if meta else None


def _workload_key(mod: Any) -> str:
    import tvm_ffi

    return str(tvm_ffi.structural_hash(mod))


def _load_database(path: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=str(path), allow_missing=False)


def _record_counts(database: Any) -> tuple[Counter[str], Counter[str]]:
    """(measured candidates, failed candidates) per workload key."""
    measured: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for record in database.get_all_tuning_records():
        key = _workload_key(record.workload.mod)
        measured[key] += 1
        secs = [float(s) for s in (record.run_secs or [])]
        if not secs or min(secs) >= FAILED_RUN_S:
            failed[key] += 1
    return measured, failed


def _merge(db_dir: Path, new: Path, meta: dict[str, Any] | None) -> str:
    """Write the current generation plus the records in ``new`` as a new generation; return its name.

    Called under the exclusive lock. The new generation is written in a hidden directory and
    renamed; the caller commits it by writing the metadata.
    """
    from tvm.s_tir import meta_schedule as ms

    name = f"gen-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
    tmp = db_dir / f".{name}.tmp"
    tmp.mkdir()
    try:
        merged = ms.database.JSONDatabase(work_dir=str(tmp))
        sources = ([db_dir / meta["generation"]] if meta else []) + [new]
        for source in sources:
            for record in _load_database(source).get_all_tuning_records():
                workload = merged.commit_workload(record.workload.mod)
                merged.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, workload, record.run_secs, record.target, record.args_info))
        del merged
        for file in (WORKLOADS_FILE, RECORDS_FILE):
            with open(tmp / file, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, db_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def _drop_old_generations(db_dir: Path, keep: str) -> None:
    """Under the exclusive lock: remove every generation but ``keep`` (readers hold the shared lock)."""
    for path in db_dir.glob("gen-*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)
    for path in db_dir.glob(".gen-*.tmp"):  # a merge killed outright
        shutil.rmtree(path, ignore_errors=True)


# -- MetaSchedule ----------------------------------------------------------------------------------


def _fast_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()`` without ``inspect.getmodule`` per frame (which scans ``sys.modules``)."""
    frame = sys._getframe(1)
    frames = []
    while frame is not None:
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno)
        frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, [line] if line else None, 0))
        frame = frame.f_back
    return frames


def _fast_tensor_intrin() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (which the tune contexts import) in ~2 s instead of 20-60 s.

    Its ~500 TVMScript functions each call ``inspect.stack()``; TVMScript only reads each frame's
    locals and code line, which :func:`_fast_stack` gives without the per-frame module lookup.
    """
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    original = inspect.stack
    inspect.stack = _fast_stack  # type: ignore[assignment]
    try:
        importlib.import_module("tvm.s_tir.tensor_intrin")
    finally:
        inspect.stack = original  # type: ignore[assignment]


def _worker_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without its slow tensor-intrinsic import (see the module doc)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export_shared_library(linker: str, mod: Any) -> str:
    """A candidate as a ``.so`` linked here (cross-linked for a board, which may have no C compiler)."""
    import tvm

    path = os.path.join(tempfile.mkdtemp(prefix="edgedistill-candidate-"), "candidate.so")
    mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(linker))
    return path


def _board_session(config: Any) -> Any:
    """RPCRunner's session factory: a free board of the key, waiting a bounded time (TVM's waits for ever)."""
    from edgedistill.bench.rpc import request_board

    wait_s = float(os.environ.get("EDGEDISTILL_TUNING_BOARD_WAIT_S") or 60.0)
    board = request_board((config.tracker_host, int(config.tracker_port)), config.tracker_key, wait_s=wait_s,
                          session_timeout_s=config.session_timeout_sec, connect_timeout_s=30.0)
    return board.session


def _progress_builder(total: int, report: Progress, linker: str | None) -> Any:
    """A LocalBuilder that reports how many trials have been built so far."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import LocalBuilder, PyBuilder

    export = functools.partial(_export_shared_library, linker) if linker else None
    inner = LocalBuilder(f_build=_worker_build, f_export=export, max_workers=os.cpu_count() or 1, timeout_sec=BUILD_TIMEOUT_S)

    @derived_object
    class ProgressBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0
            self.inner = inner  # builds without counting (the seeds of _seed_default_tiles)

        def build(self, build_inputs: list) -> list:
            results = inner.build(build_inputs)
            self.done += len(build_inputs)
            report(f"tuning: {min(self.done, total)}/{total} trials measured")
            return results

    return ProgressBuilder()


def _rpc_runner(board: BoardRunner) -> Any:
    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    os.environ["EDGEDISTILL_TUNING_BOARD_WAIT_S"] = str(board.wait_s)  # read by _board_session in the worker
    config = ms.runner.RPCConfig(tracker_host=board.tracker[0], tracker_port=board.tracker[1], tracker_key=board.key,
                                 session_timeout_sec=int(math.ceil(board.session_timeout_s)))
    runner = ms.runner.RPCRunner(config, f_create_session=_board_session)
    # RPCRunner's worker pool has no timeout: a board that vanishes mid-candidate would hang the
    # run. Bound each candidate by its wait for the board plus its session.
    runner.pool = PopenPoolExecutor(max_workers=1, timeout=board.wait_s + board.session_timeout_s + 30.0)
    return runner


def fuse_kernels(mod: Any, target: Any) -> Any:
    """``mod`` legalized to TIR and fused into the kernels that are tuned and scheduled (what MetaSchedule
    extracts its tasks from, and what the pipeline that applies the database produces)."""
    from tvm import relax, transform

    with target:
        return transform.Sequential(
            [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), relax.pipeline.zero_pipeline()]
        )(mod)


def _tuning_tasks(prepared: Any, target: Any) -> tuple[list[Any], int]:
    """(the tasks to tune, all tasks): conv/matmul tasks, or every task when there is none."""
    from tvm.s_tir import meta_schedule as ms

    tasks = list(ms.relax_integration.extract_tasks(prepared, target))
    tuned = [task for task in tasks if any(op in task.task_name for op in TUNED_OPS)] or tasks
    return tuned, len(tasks)


def _first_error(work_dir: Path) -> str:
    """The last line of the first candidate error in MetaSchedule's task logs ("" if none)."""
    for log in sorted((work_dir / "logs").glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "Error in building" in line or "Error in running" in line:
                block = []
                for later in lines[i + 1 : i + 60]:
                    if later.startswith("#") or later.startswith("20"):
                        break
                    if later.strip():
                        block.append(later.strip())
                errors = [b for b in block if "Error" in b and not b.startswith("File ")]
                return (errors[-1] if errors else block[-1] if block else line.strip())[:300]
    return ""


SMALL_BUDGET = 32  # trials per task below which the search is made lighter (see _search)


def _search(per_task: int) -> Any:
    """MetaSchedule's evolutionary search; lighter when each task gets only a few trials.

    A task gets its whole share in one batch below 64 trials, so it is searched once. The default
    search (a population of 512, 4 genetic rounds) costs ~10-50 s per task and batch on 2 cores,
    whatever the batch size: for a few trials per task that is most of the tuning time. Below
    ``SMALL_BUDGET`` trials per task the population is 128 with 2 genetic rounds; bigger budgets
    get MetaSchedule's default.
    """
    from tvm.s_tir import meta_schedule as ms

    if per_task >= SMALL_BUDGET:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(population_size=128, genetic_num_iters=2)


MS_LOGGER = "tvm.s_tir.meta_schedule"


def _drop_unnamed_handlers(logger: logging.Logger) -> None:
    """Take unnamed handlers off MetaSchedule's logger. Its logging setup (a dictConfig that
    replaces the logger's handlers anyway) lists the handlers already there by name and fails with
    "'NoneType' object has no attribute 'format'" on one without: seen on a fresh machine, where
    something had attached one before a later tuning run in the same process."""
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)


def _quiet_metaschedule() -> None:
    """Keep MetaSchedule's INFO tables in work_dir/logs, off the console. Each tune context it makes
    runs its logging setup again, which sets its logger to DEBUG and gives the console handler the
    logger's level: without this before every such call, every task after the first printed its
    tables to stdout."""
    logger = logging.getLogger(MS_LOGGER)
    logger.setLevel(logging.WARNING)
    _drop_unnamed_handlers(logger)


def _tune_contexts(tasks: list[Any], work_dir: Path, strategy: Any) -> tuple[list[Any], list[float], list[Any]]:
    """MetaSchedule's tune contexts of ``tasks`` and their weights: conv kernels search our direct-conv
    template (:mod:`~edgedistill.backends.tvm.conv_schedule`), every other task MetaSchedule's own
    rules; and the contexts of the conv kernels."""
    from tvm.s_tir import meta_schedule as ms

    contexts, weights, convs = [], [], []
    for task in tasks:
        conv = _space(task) == CONV_SPACE
        _quiet_metaschedule()
        made = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], str(work_dir), space=conv_space(task.target) if conv else "post-order-apply", strategy=strategy)
        contexts += made[0]
        weights += made[1]
        convs += made[0] if conv else []
    return contexts, weights, convs


def _seed_default_tiles(contexts: list[Any], database: Any, builder: Any, runner: Any, report: Progress) -> None:
    """Measure each conv context's default tiles (what it runs untuned) into ``database`` before the
    search: MetaSchedule's evolutionary search seeds its population with the best measured records of
    the database, so it starts from the default and mutates it, and since the best record applies,
    a tuned kernel is never one measured slower than its untuned default. A seed that fails to build
    or run is left out (the search goes on without it)."""
    from tvm.s_tir import meta_schedule as ms

    seeds = [(context, sch) for context in contexts if (sch := default_schedule(context.mod, vector_lanes(context.target))) is not None]
    if not seeds:
        return
    report(f"tuning: measuring the default tiles of {len(seeds)} conv tasks first (the search starts from them)")
    built = builder.build([ms.builder.BuilderInput(sch.mod, context.target) for context, sch in seeds])
    ready = [(context, sch, result) for (context, sch), result in zip(seeds, built) if result.error_msg is None]
    args = [ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True) for _, sch, _ in ready]
    futures = runner.run([ms.runner.RunnerInput(result.artifact_path, "cpu", arg)  # tuning is of CPU code only
                          for (_, _, result), arg in zip(ready, args)])
    for (context, sch, _), arg, future in zip(ready, args, futures):
        measured = future.result()
        if measured.error_msg is None:
            workload = database.commit_workload(context.mod)
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, measured.run_secs, context.target, arg))


def _tune(tasks: list[Any], needs: list[int], total: int, target: Any, work_dir: Path, report: Progress,
          board: BoardRunner | None, linker: str | None) -> None:
    """Run MetaSchedule on ``tasks`` (each at most its ``needs``, ``total`` in all) into a fresh JSONDatabase in ``work_dir``."""
    from tvm.s_tir import meta_schedule as ms

    _fast_tensor_intrin()
    per_task = max(needs)
    contexts, weights, convs = _tune_contexts(tasks, work_dir, _search(per_task))
    builder = _progress_builder(total, report, linker if board else None)
    runner = _rpc_runner(board) if board else ms.runner.LocalRunner()
    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    _seed_default_tiles(convs, database, builder.inner, runner, report)
    _quiet_metaschedule()
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=total,
        max_trials_per_task=per_task,
        num_trials_per_iter=min(64, per_task),
        builder=builder,
        runner=runner,
        database=database,
    )


# -- the board check -------------------------------------------------------------------------------


def check_board(board: BoardRunner, arch: str) -> BoardRunner:
    """Before tuning: a free board of ``board.key`` answers and is ``arch``; seconds, one error line.

    Returns ``board`` with ``emulated`` set from what the board says of itself.
    """
    from edgedistill.bench.rpc import RPCError, request_board, require_registered

    host, port = board.tracker
    try:  # the tracker answers and knows the key: in seconds, with the registered keys when it does not
        require_registered(board.tracker, board.key)
    except RPCError as err:
        raise ToolchainError(f"cannot tune through the RPC tracker: {err.message}",
                             err.hint or "check --rpc-tracker HOST:PORT (is the tracker running and reachable?)") from None
    try:
        with request_board(board.tracker, board.key, wait_s=board.check_wait_s, session_timeout_s=60.0,
                           connect_timeout_s=15.0) as session:
            machine, _ = session.architecture()
            emulated = bool(session.info().get("emulated"))
    except RPCError as err:
        raise ToolchainError(f"cannot tune: {err.message}", err.hint or "free a board of that key, or add one") from None
    if machine is not None and machine != arch:
        raise ToolchainError(f"cannot tune: board '{board.key}' at tracker {host}:{port} is {machine}, the target is {arch}",
                             "pass the key of a board of the target's architecture")
    return replace(board, emulated=emulated)


# -- tuning and applying ---------------------------------------------------------------------------


def apply_tuning(
    mod: Any,
    target: Any,
    *,
    db_dir: Path,
    trials: int,
    can_tune: tuple[bool, str],
    report: Progress,
    board: BoardRunner | None = None,
    linker: str | None = None,
) -> tuple[Any, TuningResult]:
    """Tune what ``mod`` lacks in the target's database ``db_dir`` (see the module doc), then apply it.

    ``can_tune`` is (whether candidates can run on this machine, why not); with ``board`` they run
    there instead, each cross-linked with ``linker``. A database made elsewhere (or earlier) is
    reused even when tuning itself is impossible, as long as it already holds what this model needs.
    """
    from tvm import relax

    start = time.perf_counter()
    prepared = fuse_kernels(mod, target)
    tasks, _ = _tuning_tasks(prepared, target)
    share = max(1, math.ceil(trials / len(tasks))) if tasks else 0
    keys = [_workload_key(_normalise(task.dispatched[0])) for task in tasks]
    meta, counts = None, Counter()
    if db_dir.is_dir():  # (reading takes the shared lock; a target never tuned has no directory yet)
        with _locked(db_dir, exclusive=False):
            meta = read_meta(db_dir)
            counts = _record_counts(_load_database(db_dir / meta["generation"]))[0] if meta else Counter()
    recorded = (meta or {}).get("workloads", {})
    done = {key: _done(task, counts[key], recorded.get(key) or {}) for task, key in zip(tasks, keys)}
    lacking = [(task, key, share - done[key]) for task, key in zip(tasks, keys) if done[key] < share]
    # One task may appear twice in a model (two identical convs are one task); tune it once.
    seen: set[str] = set()
    lacking = [item for item in lacking if not (item[1] in seen or seen.add(item[1]))]
    result = TuningResult(db_dir, trials, reused=not lacking, tasks=len(tasks), seconds=0.0)
    if lacking:
        result = _tune_lacking(lacking, share, trials, target, db_dir, report, can_tune, board, linker, start, len(tasks))
    else:
        report(f"tuning: reusing {db_dir} (all {len(tasks)} tasks hold their {share} trials)")
    with _locked(db_dir, exclusive=False):
        meta = read_meta(db_dir)
        if meta is None:  # unreachable after a commit, but never apply a database that is not there
            raise ToolchainError(f"the tuning database {db_dir} has no committed generation", "export again")
        generation = meta["generation"]
        with _load_database(db_dir / generation):  # the current database: the pipeline opens no other
            tuned = relax.get_pipeline("static_shape_tuning", total_trials=0, target=target, work_dir=str(db_dir / generation))(mod)
    return tuned, replace(result, generation=generation, seconds=time.perf_counter() - start)


def _space(task: Any) -> str | None:
    """The name of the design space ``task`` is searched in, when it is ours (None: MetaSchedule's rules)."""
    return CONV_SPACE if is_conv_task(task.dispatched[0]) else None


def _done(task: Any, measured: int, recorded: Mapping[str, Any]) -> int:
    """How many of its trials ``task`` already has: none when its records come from another design space
    (it is searched again, and the best of all its records applies)."""
    space = _space(task)
    if space and recorded.get("space") != space:
        return 0
    return max(measured, int(recorded.get("asked", 0)))


def _target_record(target: Any) -> Any:
    try:
        return json.loads(str(target))
    except ValueError:
        return str(target)


def _normalise(mod: Any) -> Any:
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return _normalize_mod(mod)


def _tune_lacking(lacking: list[tuple[Any, str, int]], share: int, trials: int, target: Any, db_dir: Path, report: Progress,
                  can_tune: tuple[bool, str], board: BoardRunner | None, linker: str | None, start: float,
                  tasks: int) -> TuningResult:
    if board is None:
        ok, why = can_tune
        if not ok:
            raise ToolchainError(
                f"cannot tune here: MetaSchedule runs each candidate on the target and {why}",
                "tune through the board with --rpc-tracker HOST:PORT --rpc-key KEY, or export with --tune-trials 0 "
                f"(a database already tuned for this target, in {db_dir.parent}, is reused without either)",
            )
    needs = [need for _, _, need in lacking]
    budget = min(trials, sum(needs))
    where = board.describe() if board else "this machine"
    report(f"tuning: {len(lacking)} of {tasks} tasks lack trials; {budget} trials on {where} (MetaSchedule; minutes on a small machine)")
    work_root = db_dir / WORK_DIR
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=work_root))
    try:
        _tune([task for task, _, _ in lacking], needs, budget, target, work, report, board, linker)
        measured, failed = _record_counts(_load_database(work)) if (work / RECORDS_FILE).is_file() else (Counter(), Counter())
        total, bad = sum(measured.values()), sum(failed.values())
        if total and bad == total:
            raise ToolchainError(f"tuning failed: every one of the {total} candidates failed on {where}: {_first_error(work)}",
                                 "nothing was added to the tuning database; fix the cause, or export with --tune-trials 0")
        with _locked(db_dir, exclusive=True):
            meta = read_meta(db_dir)
            generation = _merge(db_dir, work, meta)
            counts, fails = _record_counts(_load_database(db_dir / generation))
            workloads = dict((meta or {}).get("workloads") or {})
            for task, key, _ in lacking:
                old = workloads.get(key) or {}
                space = _space(task)
                asked_before = int(old.get("asked", 0)) if old.get("space") == space else 0
                workloads[key] = {"task": task.task_name, "asked": max(asked_before, share),
                                  "measured": counts[key], "failed": fails[key]}
                if space:
                    workloads[key]["space"] = space
            run = {
                "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "trials": total, "failed": bad, "tasks": len(lacking), "share": share,
                "seconds": round(time.perf_counter() - start, 1),
                "measured_on": where, "timings_meaningful": not (board and board.emulated),
            }
            write_json_atomic(db_dir / META_FILE, {
                "format": META_FORMAT,
                "target": _target_record(target),
                "generation": generation,
                "rule": "a task is done once it holds ceil(trials / tasks) measured candidates, or a finished run asked that of it",
                "workloads": workloads,
                "runs": [*((meta or {}).get("runs") or [])[-49:], run],
            })
            _drop_old_generations(db_dir, generation)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = [f"{bad} of {total} candidates failed to build or run"] if bad else []
    return TuningResult(db_dir, trials, reused=False, tasks=tasks, seconds=0.0, tuned_tasks=len(lacking), measured=total,
                        failed=bad, measured_on=where, notes=notes)
