"""NVIDIA TensorRT: TensorRT cannot be installed without an NVIDIA GPU, so the graph is checked
here against the target's TensorRT version (:mod:`.check`) and the engine is built on the device
from the bundle's ONNX and calibration set (``python3 -m deploy.run build-engine``) — or right away
where TensorRT and a GPU are present."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.backends.base import BuildContext, CompileJob, HostBackend, register

if TYPE_CHECKING:
    from deploy.manifest import Bundle
    from edgedistill.export.sources import ModelSource
    from edgedistill.export.targets import Target

CALIBRATION = "calibration/calibration.npy"


def _precision(target: Target) -> str:
    return (target.tensorrt or {}).get("precision", target.precision)


def _prepare(ctx: BuildContext, first: ModelSource) -> dict[str, Any]:
    """Real training images, shipped for the INT8 calibration of the engine build (the set every
    int8 path uses: :func:`edgedistill.export.quantize.calibration_set`)."""
    from edgedistill.export.quantize import calibration_record, calibration_set

    samples = ctx.calibration or calibration_set(first.checkpoint.data, ctx.options.calibration_samples, ctx.options.data_dir)
    path = ctx.root / CALIBRATION
    path.parent.mkdir()
    np.save(path, samples.inputs)
    return calibration_record(samples, shipped=CALIBRATION)


def _tensorrt_and_gpu_here() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    from deploy.cudart import CudaRuntime

    try:
        CudaRuntime().device_name()
    except Exception:  # no libcudart, no driver, or no GPU
        return False
    return True


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict[str, Any], None]:
    from edgedistill.backends.tensorrt.check import assert_tensorrt_compatible, tensorrt_version_for_target

    version = tensorrt_version_for_target(ctx.target.raw)
    precision = ctx.precision
    ctx.report(f"{job.role}: checking the graph against TensorRT {version} ({precision})")
    warnings = assert_tensorrt_compatible(job.onnx_path, version, precision)
    ctx.notes += [f"{job.role}: TensorRT {version}: {w}" for w in warnings]
    engine = f"models/{job.role}.{precision}.engine"
    entry = {"precision": precision, "engine": engine, "tensorrt_version": version,
             "warnings": [str(w) for w in warnings], "build_on_device": True}
    if _tensorrt_and_gpu_here():
        from deploy.trt_build import build_engine

        ctx.report(f"{job.role}: building the TensorRT engine on this machine's GPU")
        calibration = np.load(ctx.root / CALIBRATION) if precision == "int8" else None
        entry["record"] = build_engine(job.onnx_path, ctx.root / engine, precision, job.shape,
                                       ctx.root / "models" / "tensorrt.timing.cache", calibration)
        entry["build_on_device"] = False
    return {"tensorrt": entry}, None


def _runs_here(_bundle: Bundle) -> tuple[bool, str, str]:
    return (False, "TensorRT engines are built and measured on the device",
            "run 'python3 -m deploy.run build-engine' and 'python3 -m deploy.run bench' on the Jetson, then bench --import")


BACKEND = register(HostBackend(
    name="tensorrt",
    summary="NVIDIA TensorRT: graph checked here, fp16/int8 engine built on the Jetson",
    prepare=_prepare,
    compile=_compile,
    precision=_precision,
    precisions=("fp16", "int8", "fp32"),
    runs_here=_runs_here,
))
