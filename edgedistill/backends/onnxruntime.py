"""onnxruntime: the verified ONNX file is the artifact (fp32), or its static int8 quantization
(:mod:`edgedistill.export.quantize`), calibrated on the run's training images, or its fp16
conversion (:mod:`edgedistill.export.half`); it runs on every CPU bench can reach.

fp16 is offered only for ARM targets whose CPU has fp16 arithmetic (``asimdhp`` in the target's
``[cpu] flags``): there MLAS runs fp16 convolutions. Elsewhere it is refused: on x86 onnxruntime
has no fp16 arithmetic and the fp16 model runs slower than the fp32 one (measured here: ResNet-20
1.4 vs 0.7 ms), on an ARMv8.0 CPU (Raspberry Pi 4) it would cast back to fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.backends.base import BuildContext, CompileJob, FormCandidates, FormTimer, HostBackend, LocalArtifact, register

if TYPE_CHECKING:
    from edgedistill.export.samples import Samples
    from edgedistill.export.sources import ModelSource
    from edgedistill.export.targets import Target

PRECISIONS = ("fp32", "fp16", "int8")
TIMING_CALIBRATION = 16
"""Calibration images an int8 candidate form is quantized with for timing (latency does not depend on the scales)."""


def _default_precision(target: Target) -> str:
    """The target's precision where it is int8; a GPU target's fp16 (its TensorRT engine's) means fp32 here."""
    return target.precision if target.precision == "int8" else "fp32"


def _refuses_precision(precision: str, target: Target) -> str | None:
    from edgedistill.export.half import FP16_FLAG

    if precision != "fp16" or (target.arch == "aarch64" and FP16_FLAG in target.cpu_flags):
        return None
    if target.arch != "aarch64":
        return (f"onnxruntime has no fp16 arithmetic on {target.arch} (the fp16 model runs slower than the fp32 one); "
                "fp16 is offered for ARM targets with fp16 arithmetic, e.g. rpi5")
    return (f"{target.name}'s CPU has no fp16 arithmetic (no '{FP16_FLAG}' in its [cpu] flags: ARMv8.2-A FEAT_FP16), "
            "so onnxruntime would compute in fp32 around casts")


def _prepare(ctx: BuildContext, _first: ModelSource) -> dict[str, Any] | None:
    if ctx.precision != "int8" or ctx.calibration is None:
        return None
    from edgedistill.export.quantize import calibration_record

    return calibration_record(ctx.calibration, shipped=None)  # used here; the device needs no calibration set


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict[str, Any], int | None]:
    """The fp16 or int8 model beside the fp32 one, checked against it here (at that precision's
    tolerance, recorded: a reduced-precision model is judged by its measured top-1)."""
    if ctx.precision == "fp32":
        return {}, None
    from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
    from deploy.onnx_weights import weight_bytes
    from edgedistill.export.parity import ParityError, compare, run_batched

    relative = f"models/{job.role}.{ctx.precision}.onnx"
    out = ctx.root / relative
    record = _reduce_precision(ctx, job.onnx_path, out, ctx.calibration, job.shape[0], lambda what: ctx.report(f"{job.role}: {what}"))
    ctx.report(f"{job.role}: checking the {ctx.precision} model against the fp32 one on {job.samples.source}")
    outputs = run_batched(OnnxRuntimeRunner(out, threads=1).run, job.samples.inputs, ctx.options.batch)
    if not np.all(np.isfinite(outputs)):
        raise ParityError(f"the {ctx.precision} {job.role} produces non-finite outputs",
                          "export with --precision fp32, and report the model")
    parity = compare(job.ort_outputs, outputs, ("onnxruntime", f"onnxruntime {ctx.precision}"), precision=ctx.precision)
    job.parity.append(parity)
    if not parity.passed:
        ctx.notes.append(f"{job.role}: the {ctx.precision} outputs are outside the {ctx.precision} tolerance of the fp32 "
                         f"ones (max |diff| {parity.max_abs_diff:.3g}, top-1 agreement {100 * parity.top1_agreement:.1f}% "
                         f"on {parity.samples} samples): see its measured top-1")
    job.evaluate.append(LocalArtifact(out, "onnxruntime", ctx.precision))
    entry = {"path": relative, "precision": ctx.precision, **record, "weight_bytes": weight_bytes(out),
             "fp32_weight_bytes": weight_bytes(job.onnx_path),
             "verified": f"parity ({ctx.precision} tolerance) with the fp32 model on this machine, recorded, not required"}
    if ctx.precision == "fp16":
        entry["verified"] += ("; computed here with this machine's onnxruntime kernels, not the device's fp16 ones: "
                              "'python3 -m deploy.run verify' and 'eval' check it on the device")
    return {"onnxruntime": entry}, out.stat().st_size


def _reduce_precision(ctx: BuildContext, source: Path, out: Path, calibration: Samples | None, batch: int,
                      report: Callable[[str], None]) -> dict[str, Any]:
    """Write ``source`` at the bundle's precision (fp16 or int8, calibrated on ``calibration``) to
    ``out``; its manifest record. Used for the shipped model and for every candidate form timed."""
    from edgedistill.export import onnx_export
    from edgedistill.export.half import convert_fp16
    from edgedistill.export.quantize import quantize_onnx, recommended_settings

    if ctx.precision == "fp16":
        report("converting to fp16 with onnxruntime (float32 input and output)")
        return {"conversion": convert_fp16(source, out)}
    assert calibration is not None, "export loads the calibration set for int8"
    settings = recommended_settings(ctx.target, ctx.options.calibration_method)
    report(f"quantizing to int8 with onnxruntime ({settings.activation_type} activations, {settings.method} calibration "
           f"on {calibration.source})")
    return {"quantization": quantize_onnx(source, out, calibration.inputs, onnx_export.INPUT_NAME, batch, settings)}


def _form_facts(ctx: BuildContext) -> tuple[dict[str, Any] | None, str]:
    import onnxruntime

    from edgedistill.export.targets import host_can_run

    can_run, why = host_can_run(ctx.target)
    if not can_run:
        return None, f"{why}; the onnxruntime forms are timed on this machine only"
    facts: dict[str, Any] = {"onnxruntime": onnxruntime.__version__, "threads": ctx.timing_threads(), "precision": ctx.precision}
    if ctx.precision == "int8":
        facts["calibration_method"] = ctx.options.calibration_method
    return facts, ""


def _time_forms(ctx: BuildContext, candidates: FormCandidates) -> tuple[dict[str, float], str]:
    """Interleaved onnxruntime latency of each form, at the bundle's precision: an int8 bundle times the
    forms quantized (which form is fastest can change with precision)."""
    import functools

    from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
    from deploy.measure import MeasureConfig, interleaved

    paths = dict(candidates.onnx)
    if ctx.precision != "fp32":  # timed at the bundle's precision: latency does not depend on the int8 scales
        from edgedistill.export.samples import Samples

        calibration = None if ctx.calibration is None else \
            Samples(ctx.calibration.inputs[:TIMING_CALIBRATION], f"{TIMING_CALIBRATION} of {ctx.calibration.source}")
        for form, path in candidates.onnx.items():
            paths[form] = candidates.workdir / f"{form}.{ctx.precision}.onnx"
            _reduce_precision(ctx, path, paths[form], calibration, candidates.shape[0],
                              lambda what, form=form: ctx.report(f"{candidates.role} ({form} form, to time it): {what}"))
    threads = ctx.timing_threads()
    runners = {form: OnnxRuntimeRunner(path, threads=threads) for form, path in paths.items()}
    ctx.report(f"{candidates.role}: timing {', '.join(runners)} with onnxruntime ({threads} threads, {ctx.precision})")
    stats = interleaved({form: functools.partial(r.run, candidates.inputs) for form, r in runners.items()}, MeasureConfig.quick())
    how = f"measured on this machine with onnxruntime, {threads} threads" + (f", {ctx.precision}" if ctx.precision != "fp32" else "")
    return {form: s.median_ms for form, s in stats.items()}, how


BACKEND = register(HostBackend(
    name="onnxruntime",
    summary="the verified ONNX file (fp32; int8 quantized, or fp16 on ARM CPUs with fp16 arithmetic), run by onnxruntime on the CPU",
    prepare=_prepare,
    compile=_compile,
    precision=_default_precision,
    precisions=PRECISIONS,
    form_timer=FormTimer(_form_facts, _time_forms),
    refuses_precision=_refuses_precision,
))
