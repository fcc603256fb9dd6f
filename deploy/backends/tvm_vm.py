"""A TVM (Relax) compiled library, run by the Relax VirtualMachine on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from deploy.backends.base import DeviceBackend, RunOptions, Runner, register
from deploy.errors import DeployError
from deploy.runtime import require

if TYPE_CHECKING:
    from deploy.manifest import Bundle


class TvmRunner(Runner):
    """TVM sizes its thread pool from ``TVM_NUM_THREADS`` (read when the pool is configured), so
    the variable is set and the pool reconfigured through the ``runtime.config_threadpool`` global
    function (mode 1 = big cores); the count TVM reports afterwards is recorded. ``runtime_only``
    imports TVM's runtime library instead of the compiler (faster, and the memory figure of a real
    deployment); it only takes effect when TVM is not imported yet and must not be used in a
    process that compiles with TVM later."""

    backend = "tvm"

    def __init__(self, path: Path, threads: int, runtime_only: bool = False) -> None:
        super().__init__(path, threads)
        os.environ.update(_env(threads, RunOptions(runtime_only=runtime_only)))
        tvm = require("tvm")
        vm_module = require("tvm.runtime.vm")
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        tvm.get_global_func("runtime.config_threadpool")(1, threads)
        if affinity is not None:  # TVM pins the calling thread to one core: give the rest of the process its CPUs back
            os.sched_setaffinity(0, affinity)
        self.threads = int(tvm.get_global_func("runtime.NumThreads")())
        try:
            library = tvm.runtime.load_module(str(self.path))
        except Exception as exc:  # TVM raises its own error types (tvm.error.*)
            raise DeployError(
                f"TVM cannot load {self.path.name}: {exc}".splitlines()[0],
                "the library must be compiled for this CPU with a matching TVM version",
            ) from None
        self._tvm = tvm
        self.device = tvm.cpu(0)
        self.vm = vm_module.VirtualMachine(library, self.device)
        self.main = self.vm["main"]

    def run(self, x: np.ndarray) -> np.ndarray:
        out: Any = self.main(self._tvm.runtime.tensor(x, self.device))
        if not hasattr(out, "numpy"):  # a tuple of outputs: the logits come first
            out = out[0]
        return out.numpy()


def _env(threads: int, options: RunOptions) -> Dict[str, str]:
    env = {"TVM_NUM_THREADS": str(threads)}
    if options.runtime_only and "tvm" not in sys.modules:
        env["TVM_USE_RUNTIME_LIB"] = "1"
    return env


def _artifact(bundle: "Bundle", model: str, precision: Optional[str]) -> Path:
    spec = (bundle.model(model).get("artifacts") or {}).get("tvm")
    if not spec or not spec.get("path"):
        raise DeployError(f"bundle has no TVM artifact for the {model}", "export with --backend tvm, or use --backend onnxruntime")
    return bundle.path(spec["path"])


BACKEND = register(DeviceBackend(
    name="tvm",
    description="Apache TVM 0.27: a library compiled (or cross-compiled) for the target's CPU",
    runtime_module="tvm.runtime.vm",
    install="pip install apache-tvm apache-tvm-ffi==0.1.14.post1 (needs Python >= 3.10)",
    requirements=("numpy>=1.17", "onnxruntime>=1.10", "apache-tvm>=0.27,<0.28", "apache-tvm-ffi==0.1.14.post1"),
    open=lambda path, threads, options: TvmRunner(path, threads, runtime_only=options.runtime_only),
    artifact=_artifact,
    precision=lambda bundle, path: str(bundle.manifest.get("precision", "fp32")),
    env=_env,
))
