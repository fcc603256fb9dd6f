"""Compile an ONNX model with Apache TVM 0.27 (Relax) for a target, and run the result locally.

* CPU code (x86 or aarch64) goes into ``out_path``: a ``.so`` linked with this
  machine's C compiler, or with the target's cross compiler
  (``aarch64-linux-gnu-gcc``) for another architecture; or a ``.tar`` of object
  files, which needs no compiler here but a C compiler on the device, where
  ``tvm.runtime.load_module`` links it at load time.
* GPU targets (Jetson) additionally get ``<stem>.cuda.<ext>``: aarch64 host code
  plus CUDA kernels, which TVM 0.27 ships as CUDA C and compiles on the device
  (see :mod:`edgedistill.backends.tvm.cuda`). :class:`TvmArtifact` records which
  devices got machine code here (``compiled_for``) and why the others did not.
* ``tune_trials > 0`` tunes the CPU code with MetaSchedule into the target's one database,
  shared by every model (see :mod:`edgedistill.backends.tvm.tuning`); candidates run here, or on
  a board through an RPC tracker (``tuning_board``).
* the CPU code is channels-last (NHWC activations, HWIO weights; :mod:`edgedistill.backends.tvm.layout`),
  so that conv kernels vectorise over output channels end to end; the library still takes NCHW;
* every kernel that no tuning record covers (all of them with ``tune_trials=0``) gets a default
  schedule (:mod:`edgedistill.backends.tvm.untuned`: the direct-convolution template for convs,
  parallel and vectorised loops for the rest); TVM itself would compile it as naive scalar loops on
  one thread.
* ``fuse_shift=True`` compiles each shift → 1×1 conv of the CPU code as one kernel that reads
  the shifted addresses directly (:mod:`edgedistill.backends.tvm.fused_shift`): what the export's
  ``fused`` form of the cheap layers asks for; ``--lowering auto`` times it against the others.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgedistill.errors import EdgeDistillError, ToolchainError, exception_line
from edgedistill.backends.tvm import cuda as tvm_cuda
from edgedistill.export.targets import Target, host_arch, host_can_run
from edgedistill.backends.tvm.fused_shift import fuse_for_compile
from edgedistill.backends.tvm.onnx_import import FALLBACK_HINT, import_tvm, onnx_to_relax
from edgedistill.backends.tvm.untuned import schedule_untuned
from edgedistill.backends.tvm.layout import to_channels_last
from edgedistill.backends.tvm.tuning import BoardRunner, apply_tuning, database_dir, default_tuning_dir, fuse_kernels
from edgedistill.toolchains import cc
from edgedistill.utils.atomic import atomic_path

FORMATS = ("so", "tar")


@dataclass(frozen=True)
class TvmArtifact:
    """What was compiled, for which devices, and how."""

    path: Path  # CPU library
    format: str  # "so" | "tar"
    target: dict[str, Any]  # TVM target of ``path`` (the board's CPU)
    compiled_for: list[str]  # devices with machine code made here: ["cpu"]
    not_compiled: dict[str, str]  # device -> why it has no machine code from here
    gpu_path: Path | None = None  # GPU library (CUDA C kernels + CPU host code), GPU targets only
    gpu_target: dict[str, Any] | None = None  # its TVM target, CPU host included
    gpu_kernels: int = 0
    tuned_trials: int = 0
    tuning_database: Path | None = None
    tuning_reused: bool = False
    tuning_details: dict[str, Any] = field(default_factory=dict)  # database, where candidates ran, counts
    compile_seconds: float = 0.0
    linker: str = ""  # compiler that linked the .so ("" for .tar)
    fused: dict[str, int] | None = None  # fused kernels in the CPU library, e.g. {"shift_conv": 18}; None: fusion off
    default_scheduled: dict[str, int] = field(default_factory=dict)  # kernels with no tuning record, per default schedule (untuned.SCHEDULES)

    def manifest(self, root: str | os.PathLike[str]) -> dict[str, Any]:
        """The ``artifacts.tvm`` entry of a bundle manifest, paths relative to ``root``."""
        entry: dict[str, Any] = {
            "path": os.path.relpath(self.path, root),
            "format": self.format,
            "target": self.target,
            "compiled_for": list(self.compiled_for),
            "not_compiled": dict(self.not_compiled),
            "tuning": {"trials": self.tuned_trials, "reused": self.tuning_reused, **self.tuning_details},
            "compile_seconds": round(self.compile_seconds, 2),
            "default_scheduled": dict(self.default_scheduled),
        }
        if self.fused is not None:
            entry["fused"] = dict(self.fused)
        if self.gpu_path is not None:
            entry["gpu"] = {"path": os.path.relpath(self.gpu_path, root), "target": self.gpu_target, "kernels": self.gpu_kernels, "code": "cuda-source"}
        return entry


def _format_of(path: Path) -> str:
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ToolchainError(f"cannot tell the TVM library format from '{path.name}'", "name it *.so (shared library) or *.tar (object files)")
    return fmt


def find_linker(target: Target) -> str:
    """The compiler that links a ``.so`` for ``target`` on this machine, or a ToolchainError."""
    if target.arch == host_arch():
        return cc.find_compiler(cc.native_candidates())
    if target.cross_compiler:
        return cc.find_compiler([target.cross_compiler])
    raise ToolchainError(
        f"target '{target.name}' is {target.arch} and names no cross compiler",
        'add cross_compiler = "..." under [tvm] in its TOML (e.g. "aarch64-linux-gnu-gcc")',
    )


def _export(tvm: Any, executable: Any, out: Path, fmt: str, linker: str, report: Callable[[str], None]) -> None:
    report(f"linking {out.name}" + (f" with {os.path.basename(linker)}" if linker else ""))
    fcompile = tvm.support.tar.tar if fmt == "tar" else tvm.support.cc.cross_compiler(linker)
    with atomic_path(out) as tmp:
        try:
            executable.export_library(str(tmp), fcompile=fcompile)
        except Exception as exc:  # compiler failures surface as RuntimeError/tvm errors
            if not linker:
                raise ToolchainError(f"writing {out.name} failed: {exception_line(exc)}", "check that the `tar` program works") from exc
            raise ToolchainError(f"linking {out.name} with {os.path.basename(linker)} failed: {cc.diagnostic(str(exc))}",
                                 cc.failure_hint(linker, str(exc))) from exc


def _build(tvm: Any, mod: Any, target: dict[str, Any]) -> Any:
    try:
        return tvm.compile(mod, tvm.target.Target(target))
    except Exception as exc:  # TVM raises its own error types
        raise ToolchainError(f"TVM could not compile for {target.get('kind')}: {exception_line(exc)}", FALLBACK_HINT) from exc


def _cpu_target(target: Target) -> dict[str, Any]:
    """The board's LLVM target with num-cores, which MetaSchedule's CPU rules need."""
    cpu = target.tvm_cpu_target
    cpu.setdefault("num-cores", target.threads)
    return cpu


def _check_llvm_cpu(tvm: Any, cpu: dict[str, Any], target: Target) -> None:
    if not tvm.target.codegen.llvm_is_valid_cpu(cpu["mcpu"], cpu["mtriple"]):
        raise ToolchainError(
            f"LLVM {tvm.target.codegen.llvm_version_major()} does not know CPU '{cpu['mcpu']}' ({target.source})",
            "use an LLVM CPU name, e.g. cortex-a72, x86-64-v3",
        )


def _gpu_library(
    tvm: Any, mod: Any, gpu: dict[str, Any], out: Path, fmt: str, linker: str, report: Callable[[str], None]
) -> tuple[Path | None, int, str]:
    """Write the GPU library: (its path or None, kernel count, why the GPU has no machine code from here).

    A failure here is recorded rather than raised: the CPU library is already written and usable.
    """
    report(f"generating CUDA kernels for {gpu['arch']}")
    try:
        executable = _build(tvm, mod, gpu)
        source = tvm_cuda.cuda_source(executable)
        kernels = len(tvm_cuda.kernel_names(source))
        _, check = tvm_cuda.nvcc_check(source, gpu["arch"])
        _export(tvm, executable, out, fmt, linker, report)
    except ToolchainError as exc:
        return None, 0, f"no GPU library: {exc.message}"
    return out, kernels, tvm_cuda.gpu_note(gpu["arch"], kernels, out.name, check)


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(os.fspath(path))
    except (OSError, DecodeError) as exc:
        raise EdgeDistillError(f"cannot read ONNX model {path}: {exc}", "export the model first (edgedistill export)") from None


def gpu_library_path(out: Path) -> Path:
    """``models/student.tvm.so`` -> ``models/student.tvm.cuda.so``."""
    return out.with_name(f"{out.stem}.cuda{out.suffix}")


def compile_onnx(
    onnx_path: str | os.PathLike[str],
    target: Target,
    out_path: str | os.PathLike[str],
    *,
    input_name: str,
    input_shape: Sequence[int],
    tune_trials: int = 0,
    tuning_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    fuse_shift: bool = False,
    tuning_board: BoardRunner | None = None,
) -> TvmArtifact:
    """Compile ``onnx_path`` for ``target`` into ``out_path`` (``.so`` or ``.tar``).

    Tools are checked before any work starts, so a missing cross compiler fails
    in a second, not after tuning. ``tuning_dir`` defaults to
    ``~/.cache/edgedistill/tvm-tuning``.
    """
    report = progress or (lambda _msg: None)
    out = Path(out_path)
    fmt = _format_of(out)
    if tune_trials < 0:
        raise ToolchainError(f"tune_trials = {tune_trials} is negative", "use 0 (no tuning) or a trial budget such as 200")
    tvm = import_tvm()
    linker = find_linker(target) if fmt == "so" else ""
    cpu = _cpu_target(target)
    _check_llvm_cpu(tvm, cpu, target)
    start = time.perf_counter()

    model = _load_onnx(Path(onnx_path))
    report(f"importing {Path(onnx_path).name} into TVM Relax ({len(model.graph.node)} nodes)")
    mod = onnx_to_relax(model, input_name, input_shape)

    cpu_mod = to_channels_last(mod)  # NHWC: the conv template's channel vectors are contiguous everywhere
    cpu_mod, fused = fuse_for_compile(cpu_mod, fuse_shift, report)  # each shift → 1×1 conv as one kernel
    tuning = None
    if tune_trials > 0:
        # One database per target, shared by every model: MetaSchedule keys records by each kernel's TIR.
        db_dir = database_dir(Path(tuning_dir) if tuning_dir else default_tuning_dir(), target.name, cpu, tvm.__version__)
        cpu_mod, tuning = apply_tuning(cpu_mod, tvm.target.Target(cpu), db_dir=db_dir, trials=tune_trials, can_tune=host_can_run(target),
                                       report=report, board=tuning_board,
                                       linker=(linker or find_linker(target)) if tuning_board else None)
    else:
        cpu_mod = fuse_kernels(cpu_mod, tvm.target.Target(cpu))
    cpu_mod, default_scheduled = schedule_untuned(cpu_mod, tvm.target.Target(cpu))  # TVM would compile them as naive scalar loops
    if default_scheduled:
        kinds = ", ".join(f"{n} {name}" for name, n in default_scheduled.items())
        report(f"{sum(default_scheduled.values())} kernels without a tuning record get a default schedule ({kinds})")
    report(f"compiling for {cpu['mtriple']} / {cpu['mcpu']}")
    _export(tvm, _build(tvm, cpu_mod, cpu), out, fmt, linker, report)

    not_compiled: dict[str, str] = {}
    gpu_path, gpu_kernels = None, 0
    gpu = target.tvm_gpu_target
    if gpu is not None:
        gpu["host"] = cpu
        gpu_path, gpu_kernels, not_compiled["gpu"] = _gpu_library(tvm, mod, gpu, gpu_library_path(out), fmt, linker, report)
        if tune_trials > 0:
            not_compiled["gpu"] += "; GPU kernels are untuned (tuning needs the GPU)"
    return TvmArtifact(
        path=out,
        format=fmt,
        target=cpu,
        compiled_for=["cpu"],
        not_compiled=not_compiled,
        gpu_path=gpu_path,
        gpu_target=gpu,
        gpu_kernels=gpu_kernels,
        tuned_trials=tune_trials if tuning else 0,
        tuning_database=tuning.database if tuning else None,
        tuning_reused=tuning.reused if tuning else False,
        tuning_details=tuning.manifest() if tuning else {},
        compile_seconds=time.perf_counter() - start,
        linker=linker,
        fused=fused,
        default_scheduled=default_scheduled,
    )


def run_local(library_path: str | os.PathLike[str], inputs: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Run a compiled library on this machine (``device`` "cpu" or "cuda") and return the first output."""
    tvm = import_tvm()
    from tvm import relax

    dev = tvm.device(device)
    try:
        vm = relax.VirtualMachine(tvm.runtime.load_module(os.fspath(library_path)), dev)
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(inputs), dev))
    except Exception as exc:  # TVM raises its own error types
        raise ToolchainError(f"cannot run {library_path} here: {exception_line(exc)}", "run it on the device it was compiled for") from exc
    return (out if hasattr(out, "numpy") else out[0]).numpy()
