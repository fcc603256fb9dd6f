"""fp16 onnxruntime models for CPUs with fp16 arithmetic (ARMv8.2-A FEAT_FP16: Raspberry Pi 5, the
Jetsons' Cortex-A78AE and Carmel).

One job: turn ``models/<role>.onnx`` (fp32, the parity reference, kept in the bundle) into
``models/<role>.fp16.onnx`` with onnxruntime's own converter (``onnxruntime.transformers.float16``):
weights and activations in fp16, the graph's input and output kept float32 (``keep_io_types``) so the
device runner feeds it exactly as it feeds the fp32 model. On such a CPU onnxruntime's MLAS runs the
convolutions as fp16 NHWC kernels (checked on an emulated Cortex-A76: ``NhwcFusedConv`` in fp16,
no Cast around them); on a CPU without fp16 arithmetic it would cast back to fp32 and run slower
than the fp32 model, so export offers fp16 only for targets whose ``[cpu] flags`` have ``asimdhp``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError, exception_line

FP16_FLAG = "asimdhp"
"""The /proc/cpuinfo feature of ARM CPUs with fp16 vector arithmetic (ARMv8.2-A FEAT_FP16)."""


def convert_fp16(source: Path, out: Path) -> dict[str, Any]:
    """Write the fp16 model of ``source`` to ``out``; return the manifest's ``conversion`` record."""
    import onnx
    from onnxruntime import __version__ as ort_version
    from onnxruntime.transformers.float16 import convert_float_to_float16

    start = time.perf_counter()
    try:
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        metadata = {p.key: p.value for p in model.metadata_props}
        metadata["edgedistill.precision"] = "fp16"
        onnx.helper.set_model_props(model, metadata)
        onnx.save(model, str(out))
    except Exception as exc:  # the converter raises anything from ValueError to onnx's own errors
        raise EdgeDistillError(f"onnxruntime could not convert {source.name} to fp16: {exception_line(exc, last=False)[:300]}",
                               "export with --precision fp32, and report the model") from None
    return {
        "tool": f"onnxruntime {ort_version} transformers.float16.convert_float_to_float16 (keep_io_types)",
        "io": "float32 input and output, fp16 inside",
        "seconds": round(time.perf_counter() - start, 2),
    }
