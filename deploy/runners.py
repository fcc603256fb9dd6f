"""One tiny interface over the runtimes: ``open_runner(...).run(x) -> y``.

``run`` takes a host numpy array and returns a host numpy array for every
backend, so a timed call always covers the same boundary: input handed to the
runtime, inference, output back in host memory (for TensorRT this includes
the host<->GPU copies). Constructing a runner never runs the model, so the
first timed call really is the first run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deploy.errors import DeployError
from deploy.runtime import require


class Runner:
    """A loaded model. ``threads`` is the thread count the runtime really uses."""

    backend = ""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise DeployError(f"model file {self.path} does not exist", "check the bundle or the path")

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeRunner(Runner):
    """onnxruntime on the CPU: fixed intra-op threads, sequential, all graph optimisations."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int, arena: bool = True) -> None:
        super().__init__(path, threads)
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = arena
        self.arena = arena
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise DeployError(f"onnxruntime cannot load {self.path.name}: {exc}", "re-export the model") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


class TvmRunner(Runner):
    """A TVM (Relax) compiled library run by the Relax VirtualMachine on the CPU.

    TVM sizes its thread pool from ``TVM_NUM_THREADS`` (read when the pool is
    configured), so the variable is set and the pool reconfigured through the
    ``runtime.config_threadpool`` global function (mode 1 = big cores); the
    count TVM reports afterwards is recorded. ``runtime_only`` imports TVM's
    runtime library instead of the compiler (faster, and the memory figure of a
    real deployment); it only takes effect when TVM is not imported yet and
    must not be used in a process that compiles with TVM later.
    """

    backend = "tvm"

    def __init__(self, path: Path, threads: int, runtime_only: bool = False) -> None:
        super().__init__(path, threads)
        os.environ["TVM_NUM_THREADS"] = str(threads)
        if runtime_only and "tvm" not in sys.modules:
            os.environ["TVM_USE_RUNTIME_LIB"] = "1"
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


def open_runner(backend: str, path: Path, threads: int, arena: bool = True, runtime_only: bool = False) -> Runner:
    """The runner for ``backend``; ``arena`` is onnxruntime's CPU memory arena switch."""
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, threads, arena=arena)
    if backend == "tvm":
        return TvmRunner(path, threads, runtime_only=runtime_only)
    if backend == "tensorrt":
        from deploy.trt_runner import TensorRTRunner

        return TensorRTRunner(path, threads)
    raise DeployError(f"unknown backend '{backend}'", "valid: onnxruntime, tvm, tensorrt")
