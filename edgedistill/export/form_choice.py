"""Choosing the form a network ships in (:mod:`edgedistill.export.lowering`) by timing the candidates
with the backend that ships it.

Each candidate form is exported to ONNX and checked against the network as trained on the given
inputs (a form that fails is never chosen, and a note says why); the bundle's backend then times
the passing candidates interleaved, with the code it ships and where that code runs
(:class:`edgedistill.backends.base.FormTimer`): onnxruntime on this machine (quantized first in an
int8 bundle), TVM compiled (and tuned) for the target, here or on the board behind an RPC tracker.
The fastest wins. The choice is cached per (architecture, input shape, target, backend and what
its timing depends on): latency does not depend on the weights. A target that cannot be timed from
here, or a backend that builds its code on the device (TensorRT), gets the form measured best for
that backend and kind of CPU (:data:`edgedistill.export.lowering.FALLBACKS`), labelled as not measured. Used by export, so by ``edgedistill probe`` too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from edgedistill.backends.base import BuildContext, FormCandidates, HostBackend
from edgedistill.export import lowering, onnx_export
from edgedistill.export.parity import compare, run_batched


def choose_form(ctx: BuildContext, backend: HostBackend, role: str, model: Any, spec: dict[str, Any], inputs: np.ndarray,
                reference: np.ndarray) -> lowering.LoweringChoice:
    """The requested form (``ctx.options.lowering``), or (``auto``) the fastest candidate on the target."""
    requested = ctx.options.lowering
    if requested != lowering.AUTO:
        form = lowering.get_lowering(requested).for_backend(backend.name)
        return lowering.fixed_choice(model, form, "requested" if form == requested else f"requested: the graph of the {requested} form")
    forms = lowering.candidate_forms(model, backend.name)
    if len(forms) == 1:
        return lowering.fixed_choice(model, forms[0], "the only form")
    if backend.form_timer is None:
        return lowering.unmeasured_choice(model, f"the {backend.name} backend builds its code on the device", backend.name,
                                          ctx.target.arch)
    timing_facts, why = backend.form_timer.facts(ctx)
    if timing_facts is None:
        return lowering.unmeasured_choice(model, why, backend.name, ctx.target.arch)
    batch = ctx.options.batch
    shape = (batch, *inputs.shape[1:])
    facts = {"model": spec, "shape": shape, "target": ctx.target.raw, "backend": backend.name, "forms": forms,
             "opset": ctx.target.onnx_opset, **timing_facts}
    key = lowering.cache_key(**facts)
    cached = lowering.cached_choice(key)
    if cached:
        choice = lowering.fixed_choice(model, str(cached["form"]), f"cached: {cached['how']}, {cached['measured']}")
        choice.median_ms = dict(cached.get("median_ms") or {})
        return choice
    with tempfile.TemporaryDirectory(prefix=".lowering-", dir=ctx.root) as tmp:
        choices = _passing_forms(ctx, role, model, forms, inputs, reference, Path(tmp))
        if not choices:  # not even the trained form passed: the export's parity gate says so next
            return lowering.fixed_choice(model, "trained", "every form failed parity")
        candidates = FormCandidates(role, {form: Path(tmp) / f"{form}.onnx" for form in choices}, shape, inputs[:batch], Path(tmp))
        medians, how = backend.form_timer.time(ctx, candidates)
    best = min(medians, key=medians.__getitem__)
    chosen = choices[best]
    chosen.how, chosen.median_ms = how, medians
    lowering.remember_choice(key, chosen, facts)
    return chosen


def _passing_forms(ctx: BuildContext, role: str, model: Any, forms: list[str], inputs: np.ndarray, reference: np.ndarray,
                   workdir: Path) -> dict[str, lowering.LoweringChoice]:
    """Each form exported to ``workdir/<form>.onnx`` and checked against ``reference``; those that pass."""
    shape = (ctx.options.batch, *inputs.shape[1:])
    passing = {}
    for form in forms:
        choice = lowering.fixed_choice(model, form, "")
        ctx.report(f"{role}: trying the {form} form")
        path = onnx_export.export_onnx(choice.model, shape, workdir / f"{form}.onnx", opset=ctx.target.onnx_opset).path
        outputs = run_batched(OnnxRuntimeRunner(path, threads=1).run, inputs, ctx.options.batch)
        check = compare(reference, outputs, ("pytorch", f"onnxruntime ({form} form)"))
        if check.passed:
            passing[form] = choice
        else:
            ctx.notes.append(f"{role}: the {form} form failed parity ({check.max_abs_diff:.1e}) and was not considered")
    return passing
