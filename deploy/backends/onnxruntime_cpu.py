"""onnxruntime on the CPU: the ONNX file is the artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from deploy.backends.base import DeviceBackend, Runner, register
from deploy.errors import DeployError
from deploy.runtime import require

if TYPE_CHECKING:
    from deploy.manifest import Bundle


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


def _artifact(bundle: "Bundle", model: str, precision: Optional[str]) -> Path:
    return bundle.onnx_path(model)


BACKEND = register(DeviceBackend(
    name="onnxruntime",
    description="onnxruntime on the CPU (the ONNX file is the artifact)",
    runtime_module="onnxruntime",
    install="pip install onnxruntime",
    requirements=("numpy>=1.17", "onnxruntime>=1.10"),
    open=lambda path, threads, options: OnnxRuntimeRunner(path, threads, arena=options.arena),
    artifact=_artifact,
    has_arena=True,
))
