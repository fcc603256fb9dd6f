"""A TensorRT engine, built on the device from the bundle's ONNX (:mod:`deploy.trt_build`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from deploy.backends.base import DeviceBackend, register
from deploy.errors import DeployError

if TYPE_CHECKING:
    from deploy.manifest import Bundle


def _artifact(bundle: "Bundle", model: str, precision: Optional[str]) -> Path:
    path = bundle.engine_path(model, precision)
    if not path.is_file():
        raise DeployError(
            f"no TensorRT engine for the {model} at {path.relative_to(bundle.root)}",
            "build it on this device first: python3 -m deploy.run build-engine",
        )
    return path


def _open(path: Path, threads: int, _options: object) -> "object":
    from deploy.trt_runner import TensorRTRunner

    return TensorRTRunner(path, threads)


def _precision(bundle: "Bundle", path: Path) -> Optional[str]:
    from deploy.trt_build import read_engine_record

    return (read_engine_record(path) or {}).get("precision_built")


BACKEND = register(DeviceBackend(
    name="tensorrt",
    description="NVIDIA TensorRT: an fp16/int8 engine built on the Jetson",
    runtime_module="tensorrt",
    install="TensorRT comes with JetPack: sudo apt install nvidia-tensorrt python3-libnvinfer",
    requirements=("numpy>=1.17", "onnxruntime>=1.10", "# tensorrt: comes with JetPack (python3-libnvinfer), not from pip"),
    open=_open,  # type: ignore[arg-type]
    artifact=_artifact,
    precision=_precision,
))
