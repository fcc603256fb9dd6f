"""Choosing the form a network ships in (:mod:`edgedistill.export.lowering`) by timing the candidates.

Each candidate form is exported to ONNX, checked against the network as trained on the given
inputs (a form that fails is never chosen, and a note says why), and all passing candidates are
timed interleaved with onnxruntime on this machine; the fastest wins. The choice is cached per
(architecture, input shape, target, threads, onnxruntime version, opset): latency does not
depend on the weights. A target this machine cannot run gets the form measured best on CPUs so
far, labelled as not measured. Used by export and by ``edgedistill probe``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from deploy.env import usable_cores
from deploy.measure import MeasureConfig, interleaved
from edgedistill.export import lowering, onnx_export
from edgedistill.export.parity import compare, run_batched
from edgedistill.export.targets import Target, host_can_run


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def choose_form(model: Any, spec: dict[str, Any], target: Target, requested: str, inputs: np.ndarray, reference: np.ndarray,
                batch: int, workdir: Path, report: Callable[[str], None], notes: list[str]) -> lowering.LoweringChoice:
    """The requested form, or (``auto``) the fastest candidate measured here (see the module doc)."""
    if requested != lowering.AUTO:
        return lowering.fixed_choice(model, requested, "requested")
    forms = lowering.candidate_forms(model)
    if len(forms) == 1:
        return lowering.fixed_choice(model, forms[0], "the only form")
    can_run, why = host_can_run(target)
    if not can_run:
        return lowering.unmeasured_choice(model, f"{why}; no board to time it on")
    threads = min(target.threads, usable_cores())
    shape = (batch, *inputs.shape[1:])
    facts = {"model": spec, "shape": shape, "target": target.raw, "threads": threads, "forms": forms,
             "onnxruntime": onnxruntime_version(), "opset": target.onnx_opset}
    key = lowering.cache_key(**facts)
    cached = lowering.cached_choice(key)
    if cached:
        choice = lowering.fixed_choice(model, str(cached["form"]), f"cached: {cached['how']}, {cached['measured']}")
        choice.median_ms = dict(cached.get("median_ms") or {})
        return choice
    chosen = _time_forms(model, forms, target, inputs, reference, batch, threads, workdir, report, notes)
    if chosen.median_ms:
        lowering.remember_choice(key, chosen, facts)
    return chosen


def _time_forms(model: Any, forms: list[str], target: Target, inputs: np.ndarray, reference: np.ndarray, batch: int,
                threads: int, workdir: Path, report: Callable[[str], None], notes: list[str]) -> lowering.LoweringChoice:
    runners, choices = {}, {}
    shape = (batch, *inputs.shape[1:])
    with tempfile.TemporaryDirectory(prefix=".lowering-", dir=workdir) as tmp:
        for form in forms:
            choice = lowering.fixed_choice(model, form, "")
            report(f"trying the {form} form")
            path = onnx_export.export_onnx(choice.model, shape, Path(tmp) / f"{form}.onnx", opset=target.onnx_opset).path
            outputs = run_batched(OnnxRuntimeRunner(path, threads=1).run, inputs, batch)
            check = compare(reference, outputs, ("pytorch", f"onnxruntime ({form} form)"))
            if not check.passed:
                notes.append(f"the {form} form failed parity ({check.max_abs_diff:.1e}) and was not considered")
                continue
            runners[form], choices[form] = OnnxRuntimeRunner(path, threads=threads), choice
        x = inputs[:batch]
        report(f"timing {', '.join(runners)} with onnxruntime ({threads} threads)")
        stats = interleaved({form: functools.partial(r.run, x) for form, r in runners.items()}, MeasureConfig.quick())
    medians = {form: s.median_ms for form, s in stats.items()}
    if not medians:  # not even the trained form passed: the export's parity gate says so next
        return lowering.fixed_choice(model, "trained", "every form failed parity")
    best = min(medians, key=medians.__getitem__)
    chosen = choices[best]
    chosen.how = f"measured on this machine with onnxruntime, {threads} threads"
    chosen.median_ms = medians
    return chosen
