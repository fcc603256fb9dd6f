"""Numerical parity between two implementations of one network (PyTorch, onnxruntime, TVM, ...).

An export is only shipped when its outputs match the reference on real
samples within a tolerance that depends on the precision, and the predicted
classes agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgedistill.errors import EdgeDistillError

TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (5e-2, 5e-2), "int8": (0.5, 0.2)}
"""(atol, rtol) on logits, per precision."""
MIN_TOP1_AGREEMENT = 0.99


@dataclass(frozen=True)
class ParityReport:
    reference: str
    candidate: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float
    rtol: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


class ParityError(EdgeDistillError):
    """Two implementations of the same network disagree."""


def run_batched(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, batch: int) -> np.ndarray:
    """Run ``inputs`` through a fixed-batch ``run`` in chunks of ``batch`` (the remainder is dropped)."""
    usable = len(inputs) - len(inputs) % batch
    if usable == 0:
        raise ValueError(f"need at least {batch} samples for batch {batch}, got {len(inputs)}")
    return np.concatenate([run(np.ascontiguousarray(inputs[i : i + batch])) for i in range(0, usable, batch)])


def compare(reference: np.ndarray, candidate: np.ndarray, names: tuple[str, str], precision: str = "fp32") -> ParityReport:
    if reference.shape != candidate.shape:
        raise ParityError(
            f"{names[1]} output shape {candidate.shape} differs from {names[0]}'s {reference.shape}",
            "the exported graph does not compute the same function; report it",
        )
    atol, rtol = TOLERANCE[precision]
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    within = bool(np.all(diff <= atol + rtol * np.abs(reference)))
    return ParityReport(
        names[0], names[1], len(reference), float(diff.max()), float(diff.mean()), agreement, atol, rtol,
        within and agreement >= MIN_TOP1_AGREEMENT,
    )


def require(report: ParityReport) -> ParityReport:
    if not report.passed:
        raise ParityError(
            f"{report.candidate} does not match {report.reference}: max |diff| {report.max_abs_diff:.3g} "
            f"(tolerance {report.atol:g} + {report.rtol:g}·|ref|), top-1 agreement {100 * report.top1_agreement:.1f}% "
            f"on {report.samples} samples",
            "the export is not shipped; try another --backend or opset, and report the model",
        )
    return report
