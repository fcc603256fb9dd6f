"""onnxruntime on the CPU: the ONNX file is the artifact, or its int8 quantization (``artifacts.onnxruntime``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

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


def _quantized(bundle: "Bundle", model: str) -> Optional[Dict[str, Any]]:
    """The model's quantized onnxruntime artifact (``artifacts.onnxruntime``: int8), if the bundle has one."""
    spec = (bundle.model(model).get("artifacts") or {}).get("onnxruntime")
    return spec if spec and spec.get("path") else None


def _artifact(bundle: "Bundle", model: str, precision: Optional[str]) -> Path:
    """The fp32 ONNX, or the quantized model of a bundle exported at that precision (the default
    when the bundle was): ``precision`` picks one, None takes the bundle's."""
    spec = _quantized(bundle, model)
    if precision is None:
        return bundle.path(spec["path"]) if spec else bundle.onnx_path(model)
    if precision == "fp32":
        return bundle.onnx_path(model)
    if spec and spec.get("precision") == precision:
        return bundle.path(spec["path"])
    have = ", ".join(["fp32"] + ([str(spec.get("precision"))] if spec else []))
    raise DeployError(f"the bundle has no {precision} onnxruntime model for the {model} (it has {have})",
                      f"export it with 'edgedistill export ... --backend onnxruntime --precision {precision}', or pick --precision {have}")


def _precision(bundle: "Bundle", path: Path) -> Optional[str]:
    """The precision of the onnxruntime artifact at ``path``: its manifest entry's, fp32 for the ONNX."""
    try:
        relative = bundle.relative(path)
    except ValueError:  # a file outside the bundle
        return "fp32"
    for model in bundle.model_names():
        spec = _quantized(bundle, model)
        if spec and spec["path"] == relative:
            return str(spec.get("precision", "int8"))
    return "fp32"


def _side_by_side(bundle: "Bundle", model: str) -> List[Optional[str]]:
    """fp32 and, in a quantized bundle, the quantized model: the comparison a user of int8 needs."""
    spec = _quantized(bundle, model)
    return ["fp32", str(spec.get("precision", "int8"))] if spec else ["fp32"]


BACKEND = register(DeviceBackend(
    name="onnxruntime",
    description="onnxruntime on the CPU (the ONNX file is the artifact)",
    runtime_module="onnxruntime",
    install="pip install onnxruntime",
    requirements=("numpy>=1.17", "onnxruntime>=1.10"),
    open=lambda path, threads, options: OnnxRuntimeRunner(path, threads, arena=options.arena),
    artifact=_artifact,
    precision=_precision,
    side_by_side=_side_by_side,
    has_arena=True,
))
