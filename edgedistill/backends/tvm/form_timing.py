"""Timing the candidate forms of a network's cheap layers as TVM code, for ``--lowering auto``.

Each form is compiled exactly as the bundle will compile it (same target; the ``fused`` form with
the fused shift kernels, the others without; tuned with the bundle's budget into the target's one
database, so the tuning is not lost: the shipped form reuses it, and forms share their common
kernels' records), then timed interleaved: on this machine
when it can run the target's code, else on the board that tuning goes through (the RPC tracker),
with TVM's time evaluator on the board. Untuned code is timed untuned: the choice is for the code
that ships. The libraries are kept in the bundle's scratch (:data:`TIMED_LIBRARIES`) until the
backend's compile takes the chosen one (:func:`take_timed_library`), so it is not compiled twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Any

from edgedistill.backends.base import BuildContext, FormCandidates

FUSED = "fused"
"""The form compiled with TVM's fused shift kernels (:mod:`edgedistill.export.lowering`)."""
TIMED_LIBRARIES = "tvm_timed_libraries"
"""``ctx.state`` key: role -> form -> the TvmArtifact compiled to time that form."""
SCRATCH = ".tvm-timed"
"""Folder of the bundle's temporary root the timed libraries wait in (gone before the bundle is finished)."""


def form_facts(ctx: BuildContext) -> tuple[dict[str, Any] | None, str]:
    """What a TVM-timed choice depends on, or (None, why) when neither this machine nor a board can run it."""
    from edgedistill.backends.tvm.onnx_import import import_tvm
    from edgedistill.export.targets import host_can_run

    trials, board = ctx.state["tvm_tuning"]
    can_run, why = host_can_run(ctx.target)
    if not can_run and board is None:
        return None, f"{why}, and no board to time it on (--rpc-tracker HOST:PORT --rpc-key KEY)"
    where = {"board": board.key, "emulated": board.emulated} if board is not None and not can_run else {"threads": ctx.timing_threads()}
    return {"tvm": import_tvm().__version__, "tune_trials": trials, **where}, ""


def time_forms(ctx: BuildContext, candidates: FormCandidates) -> tuple[dict[str, float], str]:
    from edgedistill.backends.tvm.compile import compile_onnx
    from edgedistill.export import onnx_export
    from edgedistill.export.targets import host_can_run

    trials, board = ctx.state["tvm_tuning"]
    scratch = _scratch(ctx, candidates.role)
    scratch.mkdir(parents=True, exist_ok=True)
    compiled = {}
    for form, path in candidates.onnx.items():
        ctx.report(f"{candidates.role}: compiling the {form} form with TVM to time it" + (f" ({trials} trials)" if trials else ""))
        compiled[form] = compile_onnx(
            path, ctx.target, scratch / f"{form}.so", input_name=onnx_export.INPUT_NAME, input_shape=candidates.shape,
            tune_trials=trials, tuning_dir=ctx.options.tuning_dir, tuning_board=board, fuse_shift=form == FUSED,
            progress=lambda message, form=form: ctx.report(f"{candidates.role} ({form} form): {message}"),
        )
    ctx.state.setdefault(TIMED_LIBRARIES, {})[candidates.role] = compiled
    libraries = {form: artifact.path for form, artifact in compiled.items()}
    tuned = f"tuned {trials} trials" if trials else "untuned"
    if host_can_run(ctx.target)[0]:
        return _time_here(ctx, candidates, libraries), f"measured on this machine with TVM ({tuned}), {ctx.timing_threads()} threads"
    assert board is not None, "form_facts refuses a target with no way to run it"
    how = f"measured on {board.describe()} with TVM ({tuned})"
    return _time_on_board(ctx, candidates, libraries, board), how


def take_timed_library(ctx: BuildContext, role: str, form: str, out: Path) -> Any:
    """The library compiled to time ``form`` of ``role``, moved to ``out`` (its GPU library beside it),
    or None when none was (a cached choice, a fixed lowering); the other forms' libraries are deleted."""
    from edgedistill.backends.tvm.compile import gpu_library_path

    artifact = ctx.state.get(TIMED_LIBRARIES, {}).pop(role, {}).get(form)
    if artifact is not None:
        artifact.path.replace(out)
        gpu = None
        if artifact.gpu_path is not None:
            gpu = gpu_library_path(out)
            artifact.gpu_path.replace(gpu)
        artifact = dataclasses.replace(artifact, path=out, gpu_path=gpu)
    shutil.rmtree(_scratch(ctx, role), ignore_errors=True)
    with contextlib.suppress(OSError):  # empty once no other role's libraries wait in it
        (ctx.root / SCRATCH).rmdir()
    return artifact


def _scratch(ctx: BuildContext, role: str) -> Path:
    return ctx.root / SCRATCH / role.replace("/", "_")


def _time_here(ctx: BuildContext, candidates: FormCandidates, libraries: dict[str, Path]) -> dict[str, float]:
    from deploy.backends import open_runner
    from deploy.measure import MeasureConfig, interleaved

    threads = ctx.timing_threads()
    runners = {form: open_runner("tvm", path, threads) for form, path in libraries.items()}
    ctx.report(f"{candidates.role}: timing {', '.join(runners)} with TVM ({threads} threads)")
    stats = interleaved({form: functools.partial(r.run, candidates.inputs) for form, r in runners.items()}, MeasureConfig.quick())
    return {form: s.median_ms for form, s in stats.items()}


def _time_on_board(ctx: BuildContext, candidates: FormCandidates, libraries: dict[str, Path], board: Any) -> dict[str, float]:
    from deploy.measure import MeasureConfig
    from edgedistill.bench.remote import timed_rounds
    from edgedistill.bench.rpc import request_board

    ctx.report(f"{candidates.role}: timing {', '.join(libraries)} on {board.describe()}")
    with request_board(board.tracker, board.key, wait_s=board.wait_s, session_timeout_s=board.session_timeout_s) as session:
        remote = {form: session.load(path) for form, path in libraries.items()}
        stats = timed_rounds(remote, candidates.inputs, MeasureConfig.quick())
    return {form: float(s["median"]) for form, s in stats.items()}
