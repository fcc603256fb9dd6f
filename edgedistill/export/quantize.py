"""INT8 post-training quantization of a verified ONNX file with onnxruntime (static, QDQ).

One job: turn ``models/<role>.onnx`` (fp32, the parity reference, kept in the bundle) into
``models/<role>.int8.onnx``, calibrated on real training images of the run's dataset, with the
settings onnxruntime recommends for the target's CPU (:func:`recommended_settings`):

* QDQ format, per-channel symmetric int8 weights (onnxruntime's CPU kernels fuse
  DequantizeLinear → Conv → QuantizeLinear into QLinearConv).
* x86-64: uint8 activations, int8 weights (U8S8, what MLAS's x86 kernels run). Without VNNI the
  U8S8 kernel uses VPMADDUBSW, whose 16-bit intermediate can saturate; onnxruntime's guide
  names ``reduce_range`` (7-bit weights) as the fix, so it is on for x86 targets without
  AVX512-VNNI/AVX-VNNI and off where VNNI is present.
* ARM: int8 activations and weights (S8S8), onnxruntime's default for QDQ; ARM has no
  saturation issue.
* Calibration: MinMax by default (onnxruntime's default); ``entropy`` and ``percentile`` are
  there for networks whose activations have long tails.

onnxruntime's own pre-processing (``quant_pre_process``: symbolic shape inference, graph
optimisation, ONNX shape inference) runs first, as its documentation asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.errors import EdgeDistillError, exception_line

if TYPE_CHECKING:
    from edgedistill.export.samples import Samples
    from edgedistill.export.targets import Target

MIN_CALIBRATION_SAMPLES = 16
"""Fewer real images than this do not say much about the activation ranges: refused for int8."""
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni", "avxvnni"})


@dataclass(frozen=True)
class QuantSettings:
    activation_type: str  # "uint8" | "int8"
    weight_type: str  # "int8"
    per_channel: bool
    reduce_range: bool
    method: str  # one of CALIBRATION_METHODS
    reason: str
    """Why these settings, for this target (recorded in the manifest)."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": "QDQ", **asdict(self)}


def calibration_set(data: dict, count: int, data_dir: str | None) -> Samples:
    """``count`` real training images of the run's dataset (seeded), as every int8 path uses them:
    onnxruntime calibrates on them here, TensorRT gets them shipped in the bundle."""
    from edgedistill.export.samples import real_samples

    return real_samples(data, "train", count, data_dir, seed=1, allow_synthetic=False)


def calibration_record(samples: Samples, shipped: str | None) -> dict[str, Any]:
    """The manifest's ``calibration`` entry: where the images come from, how many, their hash."""
    return {"path": shipped, "source": samples.source, "images": int(len(samples.inputs)),
            "sha256": hashlib.sha256(np.ascontiguousarray(samples.inputs).tobytes()).hexdigest()}


def target_has_vnni(target: Target) -> bool:
    """Whether the target's x86 CPU has VNNI: its TOML's ``[cpu] flags``, or this CPU's for ``host``."""
    flags = set(target.cpu_flags)
    if target.raw.get("detect"):
        from deploy.manifest import cpu_flags

        flags |= cpu_flags() or set()
    return bool(flags & _VNNI_FLAGS)


def recommended_settings(target: Target, method: str = "minmax") -> QuantSettings:
    if method not in CALIBRATION_METHODS:
        raise EdgeDistillError(f"unknown calibration method {method!r}", f"use one of: {', '.join(CALIBRATION_METHODS)}")
    if target.arch == "x86_64":
        if target_has_vnni(target):
            return QuantSettings("uint8", "int8", True, False, method,
                                 f"x86-64 with VNNI ({target.name}): U8S8 without saturation, full 8-bit weights")
        return QuantSettings("uint8", "int8", True, True, method,
                             f"x86-64 without VNNI ({target.name}): U8S8 with reduce_range (7-bit weights) against "
                             "VPMADDUBSW saturation, as onnxruntime's quantization guide advises")
    return QuantSettings("int8", "int8", True, False, method,
                         f"{target.arch} ({target.name}): S8S8, onnxruntime's QDQ default (no saturation issue on ARM)")


class _Reader:
    """onnxruntime's CalibrationDataReader over fixed-size chunks of the calibration images."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch: int) -> None:
        usable = len(inputs) - len(inputs) % batch
        self._chunks: Iterator[np.ndarray] = (np.ascontiguousarray(inputs[i : i + batch]) for i in range(0, usable, batch))
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {self.input_name: chunk}

    def rewind(self) -> None:  # pragma: no cover - onnxruntime only rewinds for some methods
        pass


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice through the root logger; keep the CLI's output ours."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(source: Path, out: Path, calibration: np.ndarray, input_name: str, batch: int,
                  settings: QuantSettings) -> dict[str, Any]:
    """Write the int8 QDQ model of ``source`` to ``out``; return the manifest's ``quantization`` record.

    ``batch`` is the model's (fixed) batch size: the calibration images are fed in chunks of it.
    """
    import onnx
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) < max(batch, 1):
        raise EdgeDistillError(f"{len(calibration)} calibration images cannot fill one batch of {batch}",
                               "raise --calibration-samples")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="edgedistill-quantize-") as tmp, _quiet_quantizer():
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared))
            quantize_static(
                str(prepared), str(out), _Reader(input_name, calibration, batch),
                quant_format=QuantFormat.QDQ, per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                activation_type=types[settings.activation_type], weight_type=types[settings.weight_type],
                calibrate_method=methods[settings.method],
            )
        model = onnx.load(str(out))
        metadata = {p.key: p.value for p in model.metadata_props}
        metadata["edgedistill.precision"] = "int8"
        onnx.helper.set_model_props(model, metadata)
        onnx.save(model, str(out))
    except EdgeDistillError:
        raise
    except Exception as exc:  # onnxruntime's quantizer raises anything from ValueError to its own types
        raise EdgeDistillError(f"onnxruntime could not quantize {source.name}: {exception_line(exc, last=False)[:300]}",
                               "export with --precision fp32, and report the model") from None
    ops = sorted({node.op_type for node in model.graph.node})
    return {
        **settings.to_dict(),
        "calibration_images": int(len(calibration) - len(calibration) % batch),
        "tool": f"onnxruntime {ort_version} quantize_static (after quant_pre_process)",
        "seconds": round(time.perf_counter() - start, 2),
        "ops": ops,
    }
