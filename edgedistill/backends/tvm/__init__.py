"""Apache TVM 0.27 (Relax): each model compiled (or cross-compiled) into a library for the
target's CPU, plus CUDA kernels for Jetson GPUs where this TVM can generate them.

The layers, as in TVM's own package: :mod:`.onnx_import` (ONNX -> Relax, with errors that name the
node), :mod:`.tuning` (MetaSchedule with a persistent database), :mod:`.cuda` (CUDA source for
GPU targets), :mod:`.compile` (build, link, run locally); this module is the registry entry.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.backends.base import BuildContext, CompileJob, FormTimer, HostBackend, LocalArtifact, register
from edgedistill.backends.tvm import form_timing
from edgedistill.errors import ToolchainError
from edgedistill.toolchains.cc import elf_machine

if TYPE_CHECKING:
    from deploy.manifest import Bundle
    from edgedistill.export.targets import Target


def _check_toolchain(target: Target) -> None:
    from edgedistill.backends.tvm.compile import find_linker
    from edgedistill.backends.tvm.onnx_import import import_tvm
    from edgedistill.toolchains.cc import check_links_shared_library

    import_tvm()
    check_links_shared_library(find_linker(target))


def tuning_budget(options: Any, target: Target) -> tuple[int, str]:
    """The MetaSchedule budget per model and where it comes from (--tune-trials, else the target's default)."""
    if options.tune_trials is not None:
        return options.tune_trials, "--tune-trials"
    return target.tune_trials, f"the default of target {target.name} ([tvm] tune_trials)"


def _tuning_board(options: Any, target: Target, trials: int) -> Any:
    """The board to tune through (--rpc-tracker/--rpc-key), checked: free, reachable, the target's arch; or None."""
    from edgedistill.backends.tvm.tuning import BoardRunner, check_board
    from edgedistill.bench.rpc import parse_tracker
    from edgedistill.errors import EdgeDistillError

    if options.rpc_key and not options.rpc_tracker:
        raise EdgeDistillError("--rpc-key needs --rpc-tracker HOST:PORT", "name the tracker the board is registered with")
    if not options.rpc_tracker:
        return None
    if not options.rpc_key:
        raise EdgeDistillError("--rpc-tracker needs --rpc-key KEY", "pass the key the board registered under, e.g. --rpc-key rpi4")
    if trials == 0 and options.lowering != "auto":
        raise EdgeDistillError(
            "--rpc-tracker is used by export to tune through the board and to time the forms of --lowering auto, "
            f"and neither was asked for (--tune-trials 0, --lowering {options.lowering})",
            "add --tune-trials N (e.g. 64); to time a bundle on the board use 'edgedistill bench BUNDLE --rpc-tracker ... --rpc-key ...'")
    return check_board(BoardRunner(parse_tracker(options.rpc_tracker), options.rpc_key), target.arch)


def _prepare(ctx: BuildContext, _first_source: Any) -> None:
    """Before any model: settle the tuning budget and check the board to tune through (seconds, one error line)."""
    trials, source = tuning_budget(ctx.options, ctx.target)
    board = _tuning_board(ctx.options, ctx.target, trials)
    ctx.state["tvm_tuning"] = (trials, board)
    if trials == 0:
        ctx.notes.append("tvm: the TVM code is untuned (every kernel gets edgedistill's default schedule: fixed direct-conv "
                         "tiles for the convs); export with --tune-trials N to tune it on the target")
    elif board is not None and board.emulated:
        ctx.notes.append(f"tvm: tuned on an emulated board ({board.key}): the schedules are correct, but chosen by "
                         "timings that mean nothing; tune on the real board before trusting TVM figures")
    if trials and source != "--tune-trials":
        ctx.report(f"tvm: tuning {trials} trials per model, {source}; --tune-trials 0 skips it")
    return None


@contextlib.contextmanager
def _library_form(ctx: BuildContext, job: CompileJob) -> Iterator[tuple[Path, Any]]:
    """The ONNX file the library is compiled from, and the form choice: the bundle's graph when TVM's
    own choice (``--lowering``, or auto: timed as TVM code) is the graph's form, else the network
    exported in TVM's form into a scratch file that is gone afterwards. The library is checked
    against onnxruntime on the bundle's graph either way."""
    from edgedistill.export import lowering, onnx_export
    from edgedistill.export.form_choice import choose_form

    choice = choose_form(ctx, BACKEND, job.role, job.model, job.spec, job.samples.inputs, job.reference)
    if lowering.graph_form(choice.form) == job.form:
        yield job.onnx_path, choice
        return
    with tempfile.TemporaryDirectory(prefix=".tvm-form-", dir=ctx.root) as tmp:
        path = Path(tmp) / f"{job.role}.{choice.form}.onnx"
        yield onnx_export.export_onnx(choice.model, job.shape, path, opset=ctx.target.onnx_opset).path, choice


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict[str, Any], int]:
    from edgedistill.backends.tvm.compile import compile_onnx, run_local
    from edgedistill.export import onnx_export
    from edgedistill.export.parity import compare, require, run_batched
    from edgedistill.export.targets import host_can_run

    options, target = ctx.options, ctx.target
    budget, board = ctx.state["tvm_tuning"]  # settled by _prepare, before any model
    trials = f", tuning {budget} trials" + (f" on {board.describe()}" if board else "") if budget else " (untuned)"
    out = ctx.root / "models" / f"{job.role}.tvm.so"
    with _library_form(ctx, job) as (onnx_path, choice):
        artifact = form_timing.take_timed_library(ctx, job.role, choice.form, out)
        if artifact is not None:
            ctx.report(f"{job.role}: the TVM library of the {choice.form} form was compiled to time it: shipping it")
        else:
            ctx.report(f"{job.role}: compiling with TVM for {target.name}{trials} ({choice.form} form)")
            artifact = compile_onnx(
                onnx_path, target, out, input_name=onnx_export.INPUT_NAME,
                input_shape=job.shape, tune_trials=budget, tuning_dir=options.tuning_dir, tuning_board=board,
                fuse_shift=choice.form == form_timing.FUSED, progress=lambda message: ctx.report(f"{job.role}: {message}"),
            )
    entry = {**artifact.manifest(ctx.root), "lowering": choice.manifest(),
             "executed_macs": choice.executed_macs(job.shape)}
    if artifact.tuned_trials:
        details = artifact.tuning_details
        done = ("database reused, nothing measured" if artifact.tuning_reused else
                f"{details['measured_now']} candidates measured on {details['measured_on']}"
                + (f", {details['failed_now']} of them failed" if details.get("failed_now") else ""))
        ctx.notes.append(f"{job.role}: TVM tuned ({budget} trials, target database {details['database']}): {done}")
    can_run, why = host_can_run(target)
    if can_run:
        ctx.report(f"{job.role}: checking the TVM library against onnxruntime")
        outputs = run_batched(lambda x: run_local(artifact.path, x), job.samples.inputs, options.batch)
        job.parity.append(require(compare(job.ort_outputs, outputs, ("onnxruntime", f"tvm ({target.name})"))))
        entry["verified"] = "parity with onnxruntime on this machine"
        job.evaluate.append(LocalArtifact(artifact.path, "tvm", "fp32"))
    else:
        machine = elf_machine(artifact.path)
        if machine != target.arch:
            raise ToolchainError(f"the TVM library is {machine}, not {target.arch}", "check the target's cross compiler")
        entry["verified"] = f"ELF header only ({machine}); {why}. Run it with 'edgedistill bench --rpc-tracker'"
    size = artifact.path.stat().st_size + (artifact.gpu_path.stat().st_size if artifact.gpu_path else 0)
    return {"tvm": entry}, size


def _runs_here(bundle: Bundle) -> tuple[bool, str, str]:
    from edgedistill.export.targets import host_can_run, parse_target

    hint = "use --rpc-tracker HOST:PORT --rpc-key KEY, or run 'python3 -m deploy.run bench' on the board"
    if not all((bundle.model(m).get("artifacts") or {}).get("tvm") for m in bundle.model_names()):
        return False, "cannot run the bundle's TVM code here: the bundle has no TVM libraries (it was exported with another backend)", \
            "export with --backend tvm"
    ok, why = host_can_run(parse_target(bundle.manifest["target"], f"{bundle.target_name} (from the bundle)"))
    return ok, f"cannot run the bundle's TVM code here: {why}", hint


REFUSED_PRECISIONS = {
    "int8": "TVM 0.27's Relax ONNX importer turns QuantizeLinear/DequantizeLinear into "
            "relax quantize/dequantize ops that are legalized to float32 arithmetic around fp32 "
            "convolutions, so the library would compute in float: a fake int8",
    "fp16": "this project exports TVM libraries in fp32 only",
}
"""Why TVM does not export these precisions (on any target)."""


BACKEND = register(HostBackend(
    name="tvm",
    summary="Apache TVM 0.27: a library compiled for the target's CPU (cross-compiled for ARM), CUDA code for Jetson GPUs",
    options=frozenset({"tune_trials", "tuning_dir", "rpc_tracker", "rpc_key"}),
    refuses_precision=lambda precision, _target: REFUSED_PRECISIONS.get(precision),
    check_toolchain=_check_toolchain,
    prepare=_prepare,
    compile=_compile,
    graph_form_by="onnxruntime",
    form_timer=FormTimer(form_timing.form_facts, form_timing.time_forms),
    runs_here=_runs_here,
))
