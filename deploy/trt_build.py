"""Build a TensorRT engine on the device from the bundle's ONNX model.

TensorRT engines are tied to the GPU and the TensorRT version, so they are
built where they run. The TensorRT Python API is used when importable
(builder -> network from ``OnnxParser`` -> builder config with a workspace
limit, FP16 when the GPU has fast FP16, INT8 calibrated with an entropy
calibrator fed from ``calibration/calibration.npy``, and a timing cache file
reused across builds); otherwise ``trtexec`` is run with the same settings.
Next to every engine a JSON record states what built it (TensorRT, CUDA,
L4T/JetPack, GPU), because an engine is only valid with those versions.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from deploy.atomic import atomic_path, write_bytes_atomic, write_json_atomic
from deploy.backends.base import PRECISIONS
from deploy.errors import DeployError
from deploy.manifest import sha256_file
from deploy.runtime import require

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


# --------------------------------------------------------------------- calibration data


def load_calibration(path: Path) -> np.ndarray:
    try:
        data = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read calibration data {path}: {exc}", "re-export the bundle with calibration data") from None
    return data


def calibration_batches(data: np.ndarray, input_shape: Sequence[int], max_batches: Optional[int] = None) -> List[np.ndarray]:
    """Cut N,C,H,W calibration samples into C-contiguous float32 batches of the engine's batch size.

    The ONNX input shape is fixed, so every batch must have exactly that shape;
    a trailing partial batch is dropped rather than padded with fake samples.
    """
    shape = tuple(int(d) for d in input_shape)
    if data.ndim != len(shape) or tuple(data.shape[1:]) != shape[1:]:
        raise DeployError(
            f"calibration data has shape {tuple(data.shape)}, expected (N, {', '.join(map(str, shape[1:]))})",
            "re-export the bundle so calibration.npy matches the model input",
        )
    batch = shape[0]
    count = len(data) // batch
    if max_batches is not None:
        count = min(count, max_batches)
    if count == 0:
        raise DeployError(
            f"calibration data has {len(data)} samples, fewer than one batch of {batch}", "ship more calibration samples"
        )
    return [np.ascontiguousarray(data[i * batch : (i + 1) * batch], dtype=np.float32) for i in range(count)]


# --------------------------------------------------------------------- versions


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """'# R36 (release), REVISION: 3.0, ...' -> '36.3.0' (the L4T version)."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def decode_trt_version(number: int) -> str:
    """trtexec prints ``[TensorRT v8502]`` for 8.5.2 and ``v100300`` for 10.3.0."""
    if number >= 100000:
        return f"{number // 10000}.{(number // 100) % 100}.{number % 100}"
    return f"{number // 1000}.{(number // 100) % 10}.{number % 100}"


def _dpkg_version(*packages: str) -> Optional[str]:
    if shutil.which("dpkg-query") is None:
        return None
    for package in packages:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return None


def versions_record(trt: Any = None, trtexec_log: str = "") -> Dict[str, Optional[str]]:
    """TensorRT, CUDA, L4T, JetPack and GPU versions of this device; None where unknown."""
    record: Dict[str, Optional[str]] = {"tensorrt": getattr(trt, "__version__", None)}
    if record["tensorrt"] is None:
        match = re.search(r"TensorRT v(\d+)", trtexec_log)
        record["tensorrt"] = decode_trt_version(int(match.group(1))) if match else _dpkg_version(
            "tensorrt", "libnvinfer10", "libnvinfer8"
        )
    try:
        from deploy.cudart import CudaRuntime

        cuda = CudaRuntime()
        record.update(
            cuda_runtime=cuda.runtime_version(),
            cuda_driver=cuda.driver_version(),
            gpu=cuda.device_name(),
            compute_capability=cuda.compute_capability(),
        )
    except DeployError:
        record.update(cuda_runtime=None, cuda_driver=None, gpu=None, compute_capability=None)
    try:
        record["l4t"] = parse_nv_tegra_release(Path("/etc/nv_tegra_release").read_text(encoding="utf-8"))
    except OSError:
        record["l4t"] = None
    jetpack = _dpkg_version("nvidia-jetpack")
    record["jetpack"] = jetpack.split("+", 1)[0] if jetpack else None
    return record


# --------------------------------------------------------------------- trtexec fallback


def find_trtexec() -> Optional[str]:
    found = shutil.which("trtexec")
    if found:
        return found
    return next((path for path in TRTEXEC_PATHS if os.access(path, os.X_OK)), None)


def trtexec_command(
    trtexec: str,
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    timing_cache: Path,
    workspace_mb: int,
    calibration_cache: Optional[Path] = None,
) -> List[str]:
    """The trtexec command line equivalent to the Python-API build.

    INT8 through trtexec can only reuse a calibration cache written by an
    earlier Python-API build: trtexec cannot read our calibration samples, and
    INT8 without calibration gives meaningless scales, so that is refused.
    """
    if precision not in PRECISIONS:
        raise DeployError(f"unknown precision '{precision}'", "valid: " + ", ".join(PRECISIONS))
    command = [
        trtexec,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--timingCacheFile={timing_cache}",
        f"--memPoolSize=workspace:{int(workspace_mb)}",
        # only build: keep trtexec's own benchmark after the build to one run
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
    ]
    if precision in ("fp16", "int8"):
        command.append("--fp16")
    if precision == "int8":
        if calibration_cache is None or not Path(calibration_cache).is_file():
            raise DeployError(
                "INT8 with trtexec needs a calibration cache from a TensorRT Python build",
                "install the TensorRT Python bindings (python3-libnvinfer) or use --precision fp16",
            )
        command += ["--int8", f"--calib={calibration_cache}"]
    return command


def _build_with_trtexec(
    onnx_path: Path, engine_path: Path, precision: str, timing_cache: Path, workspace_mb: int, calibration_cache: Path
) -> Dict[str, Any]:
    trtexec = find_trtexec()
    if trtexec is None:
        raise DeployError(
            "neither the TensorRT Python API nor trtexec is available",
            "install TensorRT from JetPack (sudo apt install nvidia-tensorrt python3-libnvinfer)",
        )
    with atomic_path(engine_path) as tmp:
        command = trtexec_command(trtexec, onnx_path, tmp, precision, timing_cache, workspace_mb, calibration_cache)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise DeployError(f"trtexec failed to build {engine_path.name}: {tail[0]}", "run the command by hand: " + " ".join(command))
    return {"builder": "trtexec", "precision_built": precision, "log": done.stdout}


# --------------------------------------------------------------------- Python API


def _make_calibrator(trt: Any, batches: List[np.ndarray], cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 that feeds ``batches`` through one device buffer."""
    from deploy.cudart import CudaRuntime

    cuda = CudaRuntime()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.pointer = cuda.malloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            if self.index >= len(batches):
                return None
            cuda.to_device(self.pointer, batches[self.index])
            self.index += 1
            return [self.pointer]

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_bytes_atomic(cache_path, bytes(cache))

    return EntropyCalibrator()


def _build_with_python(
    trt: Any,
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    timing_cache: Path,
    workspace_mb: int,
    input_shape: Sequence[int],
    batches: Optional[List[np.ndarray]],
    calibration_cache: Path,
) -> Dict[str, Any]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".", 1)[0])
    # explicit batch is the only mode in TensorRT 10 (the flag is deprecated there)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["unknown parser error"]
        raise DeployError(f"TensorRT cannot parse {onnx_path.name}: {errors[0]}", "check the model with edgedistill's TensorRT graph check")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)]
    if dynamic:  # a fixed optimisation profile at the bundle's input shape
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, tuple(input_shape), tuple(input_shape), tuple(input_shape))
        config.add_optimization_profile(profile)
    built = "fp32"
    # platform_has_fast_* are deprecated since TensorRT 10.5; every Jetson GPU has both
    if precision in ("fp16", "int8") and getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
        built = "fp16"
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise DeployError("this GPU has no fast INT8", "use --precision fp16")
        if not batches:
            raise DeployError("INT8 needs calibration data", "export the bundle with calibration/calibration.npy")
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise DeployError(
                f"TensorRT {trt.__version__} has no implicit INT8 calibration", "use --precision fp16 (or a quantized ONNX model)"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, batches, calibration_cache)  # a local keeps it alive through the build
        config.int8_calibrator = calibrator
        built = "int8" if built == "fp32" else "int8+fp16"
    # a cache from another TensorRT version is refused (None): start a fresh one then
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    cache = cache or config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployError(f"TensorRT failed to build an engine from {onnx_path.name}", "see the TensorRT log above")
    write_bytes_atomic(engine_path, bytes(serialized))
    write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"builder": "tensorrt-python", "precision_built": built}


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    input_shape: Sequence[int],
    timing_cache: Path,
    calibration: Optional[np.ndarray] = None,
    workspace_mb: int = 1024,
    use_trtexec: bool = False,
) -> Dict[str, Any]:
    """Build ``engine_path`` and write ``<engine>.json`` next to it; return that record."""
    if precision not in PRECISIONS:
        raise DeployError(f"unknown precision '{precision}'", "valid: " + ", ".join(PRECISIONS))
    onnx_path, engine_path, timing_cache = Path(onnx_path), Path(engine_path), Path(timing_cache)
    calibration_cache = engine_path.with_suffix(".calib")
    batches = calibration_batches(calibration, input_shape) if precision == "int8" and calibration is not None else None
    started = time.monotonic()
    trt = None
    if not use_trtexec:
        try:
            trt = require("tensorrt")
        except DeployError:
            trt = None
    if trt is not None:
        outcome = _build_with_python(
            trt, onnx_path, engine_path, precision, timing_cache, workspace_mb, input_shape, batches, calibration_cache
        )
    else:
        outcome = _build_with_trtexec(onnx_path, engine_path, precision, timing_cache, workspace_mb, calibration_cache)
    record: Dict[str, Any] = {
        "engine": engine_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "precision_requested": precision,
        "precision_built": outcome["precision_built"],
        "builder": outcome["builder"],
        "input_shape": [int(d) for d in input_shape],
        "workspace_mb": int(workspace_mb),
        "timing_cache": timing_cache.name,
        "calibration_batches": len(batches) if batches else None,
        "build_seconds": round(time.monotonic() - started, 3),
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions_record(trt, outcome.get("log", "")),
    }
    write_json_atomic(engine_record_path(engine_path), record)
    return record


def engine_record_path(engine_path: Path) -> Path:
    return Path(engine_path).with_name(Path(engine_path).name + ".json")


def read_engine_record(engine_path: Path) -> Optional[Dict[str, Any]]:
    path = engine_record_path(engine_path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
