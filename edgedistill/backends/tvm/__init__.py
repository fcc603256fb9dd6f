"""Apache TVM 0.27 (Relax): each model compiled (or cross-compiled) into a library for the
target's CPU, plus CUDA kernels for Jetson GPUs where this TVM can generate them.

The layers, as in TVM's own package: :mod:`.onnx_import` (ONNX -> Relax, with errors that name the
node), :mod:`.tuning` (MetaSchedule with a persistent database), :mod:`.cuda` (CUDA source for
GPU targets), :mod:`.compile` (build, link, run locally); this module is the registry entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgedistill.backends.base import BuildContext, CompileJob, HostBackend, register
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


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict[str, Any], int]:
    from edgedistill.backends.tvm.compile import compile_onnx, run_local
    from edgedistill.export import onnx_export
    from edgedistill.export.parity import compare, require, run_batched
    from edgedistill.export.targets import host_can_run

    options, target = ctx.options, ctx.target
    trials = f", tuning {options.tune_trials} trials" if options.tune_trials else ""
    ctx.report(f"{job.role}: compiling with TVM for {target.name}{trials}")
    artifact = compile_onnx(
        job.onnx_path, target, ctx.root / "models" / f"{job.role}.tvm.so", input_name=onnx_export.INPUT_NAME,
        input_shape=job.shape, tune_trials=options.tune_trials, tuning_dir=options.tuning_dir,
        progress=lambda message: ctx.report(f"{job.role}: {message}"),
    )
    entry = artifact.manifest(ctx.root)
    can_run, why = host_can_run(target)
    if can_run:
        ctx.report(f"{job.role}: checking the TVM library against onnxruntime")
        outputs = run_batched(lambda x: run_local(artifact.path, x), job.samples.inputs, options.batch)
        job.parity.append(require(compare(job.ort_outputs, outputs, ("onnxruntime", f"tvm ({target.name})"))))
        entry["verified"] = "parity with onnxruntime on this machine"
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


BACKEND = register(HostBackend(
    name="tvm",
    summary="Apache TVM 0.27: a library compiled for the target's CPU (cross-compiled for ARM), CUDA code for Jetson GPUs",
    options=frozenset({"tune_trials", "tuning_dir"}),
    check_toolchain=_check_toolchain,
    compile=_compile,
    runs_here=_runs_here,
))
