"""onnxruntime: the verified ONNX file is the artifact (fp32), or its static int8 quantization
(:mod:`edgedistill.export.quantize`), calibrated on the run's training images; it runs on every
CPU bench can reach.

fp16 is refused: onnxruntime's CPU execution provider has no fp16 convolution on x86 (it inserts
Casts and computes in fp32, slower than the fp32 model: measured here, 0.18 vs 0.15 ms for a
ResNet-8), so an fp16 ONNX would be a bigger-than-needed fp32 model, not an fp16 one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.backends.base import BuildContext, CompileJob, FormCandidates, FormTimer, HostBackend, LocalArtifact, register

if TYPE_CHECKING:
    from edgedistill.export.sources import ModelSource
    from edgedistill.export.targets import Target

PRECISIONS = ("fp32", "int8")
TIMING_CALIBRATION = 16
"""Calibration images an int8 candidate form is quantized with for timing (latency does not depend on the scales)."""


def _default_precision(target: Target) -> str:
    """The target's precision where onnxruntime offers it; a GPU target's fp16 means fp32 here."""
    return target.precision if target.precision in PRECISIONS else "fp32"


def _prepare(ctx: BuildContext, _first: ModelSource) -> dict[str, Any] | None:
    if ctx.precision != "int8" or ctx.calibration is None:
        return None
    from edgedistill.export.quantize import calibration_record

    return calibration_record(ctx.calibration, shipped=None)  # used here; the device needs no calibration set


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict[str, Any], int | None]:
    if ctx.precision != "int8":
        return {}, None
    from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
    from deploy.onnx_weights import weight_bytes
    from edgedistill.export import onnx_export
    from edgedistill.export.parity import ParityError, compare, run_batched
    from edgedistill.export.quantize import quantize_onnx, recommended_settings

    assert ctx.calibration is not None, "export loads the calibration set for int8"
    settings = recommended_settings(ctx.target, ctx.options.calibration_method)
    relative = f"models/{job.role}.int8.onnx"
    out = ctx.root / relative
    ctx.report(f"{job.role}: quantizing to int8 with onnxruntime ({settings.activation_type} activations, "
               f"{settings.method} calibration on {ctx.calibration.source})")
    record = quantize_onnx(job.onnx_path, out, ctx.calibration.inputs, onnx_export.INPUT_NAME, job.shape[0], settings)
    ctx.report(f"{job.role}: checking the int8 model against the fp32 one on {job.samples.source}")
    outputs = run_batched(OnnxRuntimeRunner(out, threads=1).run, job.samples.inputs, ctx.options.batch)
    if not np.all(np.isfinite(outputs)):
        raise ParityError(f"the int8 {job.role} produces non-finite outputs", "export with --precision fp32, and report the model")
    parity = compare(job.ort_outputs, outputs, ("onnxruntime", "onnxruntime int8"), precision="int8")
    job.parity.append(parity)  # recorded; an int8 model is judged by its measured accuracy, not by fp32 tolerances
    if not parity.passed:
        ctx.notes.append(f"{job.role}: the int8 outputs are outside the int8 tolerance of the fp32 ones "
                         f"(max |diff| {parity.max_abs_diff:.3g}, top-1 agreement {100 * parity.top1_agreement:.1f}% "
                         f"on {parity.samples} samples): see its measured top-1")
    job.evaluate.append(LocalArtifact(out, "onnxruntime", "int8"))
    entry = {"path": relative, "precision": "int8", "quantization": record, "weight_bytes": weight_bytes(out),
             "fp32_weight_bytes": weight_bytes(job.onnx_path), "verified": "parity (int8 tolerance) with the fp32 "
             "model on this machine, recorded, not required"}
    return {"onnxruntime": entry}, out.stat().st_size


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
    if ctx.precision == "int8":
        from edgedistill.export import onnx_export
        from edgedistill.export.quantize import quantize_onnx, recommended_settings

        assert ctx.calibration is not None, "export loads the calibration set for int8"
        settings = recommended_settings(ctx.target, ctx.options.calibration_method)
        for form, path in candidates.onnx.items():
            ctx.report(f"{candidates.role}: quantizing the {form} form to time it in int8")
            paths[form] = candidates.workdir / f"{form}.int8.onnx"
            quantize_onnx(path, paths[form], ctx.calibration.inputs[:TIMING_CALIBRATION], onnx_export.INPUT_NAME,
                          candidates.shape[0], settings)
    threads = ctx.timing_threads()
    runners = {form: OnnxRuntimeRunner(path, threads=threads) for form, path in paths.items()}
    ctx.report(f"{candidates.role}: timing {', '.join(runners)} with onnxruntime ({threads} threads, {ctx.precision})")
    stats = interleaved({form: functools.partial(r.run, candidates.inputs) for form, r in runners.items()}, MeasureConfig.quick())
    how = f"measured on this machine with onnxruntime, {threads} threads" + (", int8" if ctx.precision == "int8" else "")
    return {form: s.median_ms for form, s in stats.items()}, how


BACKEND = register(HostBackend(
    name="onnxruntime",
    summary="the verified ONNX file (fp32, or int8 quantized by onnxruntime), run by onnxruntime on the CPU",
    prepare=_prepare,
    compile=_compile,
    precision=_default_precision,
    precisions=PRECISIONS,
    form_timer=FormTimer(_form_facts, _time_forms),
    refused_precisions={"fp16": "onnxruntime's CPU execution provider has no fp16 convolution kernels on x86 "
                                "(it casts back and computes in fp32, slower than the fp32 model)"},
))
