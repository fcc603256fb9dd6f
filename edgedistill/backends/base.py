"""The host half of a backend: what it needs here, which options it reads, how export prepares
its artifact for a target, and whether bench can run that artifact on this machine.

One :class:`HostBackend` per backend, registered under the same name as its device half
(:mod:`deploy.backends`); the CLI's choices, the option checks, the export pipeline and bench all
read :data:`HOST_BACKENDS`. Adding a backend: a module that calls :func:`register` (and its device
module), imported in ``edgedistill/backends/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.utils.names import Registry

if TYPE_CHECKING:
    from deploy.manifest import Bundle
    from edgedistill.export.parity import ParityReport
    from edgedistill.export.samples import Samples
    from edgedistill.export.targets import Target


@dataclass
class BuildContext:
    """What a backend sees of the bundle being built: its temporary root, target, the export
    options, a progress callback and the notes that end up in the manifest and summary."""

    root: Path
    target: Target
    options: Any
    report: Callable[[str], None]
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"
    """The precision this bundle is exported at (--precision, else the backend's default for the target)."""
    calibration: Samples | None = None
    """The real training images int8 is calibrated on (loaded by export when the precision is int8)."""
    state: dict[str, Any] = field(default_factory=dict)
    """What a backend's ``prepare`` settles once per bundle for its ``compile`` (e.g. the board TVM tunes through)."""

    def timing_threads(self) -> int:
        """Threads a backend times candidate forms with on this machine: the target's, at most this machine's cores."""
        from deploy.env import usable_cores

        return min(self.target.threads, usable_cores())


@dataclass(frozen=True)
class LocalArtifact:
    """An artifact this machine can run, which export measures the accuracy of on the test split:
    ``backend`` is the device backend (:mod:`deploy.backends`) that opens ``path``."""

    path: Path
    backend: str
    precision: str


@dataclass
class CompileJob:
    """One model to prepare: its verified ONNX file, the input shape, onnxruntime's outputs on the
    parity samples (what a compiled artifact must reproduce) and the parity reports so far."""

    role: str
    onnx_path: Path
    shape: tuple[int, ...]
    ort_outputs: np.ndarray
    samples: Samples
    parity: list[ParityReport]
    form: str = "trained"
    """The form of the cheap layers in ``onnx_path`` (:mod:`edgedistill.export.lowering`)."""
    model: Any = None
    """The network as trained (PyTorch), for a backend that picks its own form of the cheap layers (``graph_form_by``)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """Its ModelSpec as a dict (keys the cached form choices)."""
    reference: np.ndarray | None = None
    """PyTorch's outputs on the parity samples."""
    evaluate: list[LocalArtifact] = field(default_factory=list)
    """Artifacts the backend made that run here (the fp32 ONNX is measured anyway): their top-1 is measured."""


@dataclass
class FormCandidates:
    """The forms of one network's cheap layers that passed parity (:mod:`edgedistill.export.form_choice`),
    each exported to ONNX in ``workdir`` (removed once the choice is made), for a backend to time."""

    role: str
    onnx: dict[str, Path]
    shape: tuple[int, ...]
    inputs: np.ndarray
    """One batch to time with."""
    workdir: Path


@dataclass(frozen=True)
class FormTimer:
    """How a backend times candidate forms of a network with the code it ships, where that code runs."""

    facts: Callable[[BuildContext], tuple[dict[str, Any] | None, str]]
    """What a measured choice depends on besides the graph (runtime version, threads, precision, tuning,
    board), which keys the cache of choices; or (None, why) when the target cannot be timed from here."""
    time: Callable[[BuildContext, FormCandidates], tuple[dict[str, float], str]]
    """Each candidate's median latency in ms, timed interleaved, and how it was measured."""


def _nothing_to_compile(_ctx: BuildContext, _job: CompileJob) -> tuple[dict[str, Any], int | None]:
    return {}, None


@dataclass(frozen=True)
class HostBackend:
    name: str
    summary: str
    """One line for --help and 'edgedistill targets'."""
    options: frozenset[str] = frozenset()
    """Export options only this backend reads (an ExportOptions field each): given with another
    backend, they are an error rather than silently ignored."""
    check_toolchain: Callable[[Target], None] = lambda target: None
    """Fail in a second, before any export, when a tool this backend needs here is missing."""
    prepare: Callable[[BuildContext, Any], dict[str, Any] | None] = lambda ctx, first_source: None
    """Bundle-wide files written before the models (e.g. a calibration set); returns the manifest's
    ``calibration`` entry, or None."""
    compile: Callable[[BuildContext, CompileJob], tuple[dict[str, Any], int | None]] = _nothing_to_compile
    """The model's ``artifacts`` manifest entries and the compiled bytes (None: the ONNX is the artifact)."""
    precision: Callable[[Target], str] = lambda target: "fp32"
    """The precision exported when --precision is not given (one of ``precisions``)."""
    precisions: tuple[str, ...] = ("fp32",)
    """What ``--precision`` may ask of this backend on some target; anything else is refused up front."""
    refuses_precision: Callable[[str, Target], str | None] = lambda precision, target: None
    """Why ``precision`` is not offered for ``target`` (e.g. a CPU with no fp16 arithmetic), or None
    when it is; the error names what can run it."""

    def offers(self, precision: str, target: Target) -> bool:
        return precision in self.precisions and self.refuses_precision(precision, target) is None

    def offered_precisions(self, target: Target) -> tuple[str, ...]:
        return tuple(p for p in self.precisions if self.refuses_precision(p, target) is None)
    graph_form_by: str | None = None
    """The backend whose timer picks the form of the bundle's ONNX graph when not this one: TVM ships the
    graph for onnxruntime (its form chosen by onnxruntime) and picks its own form for its library."""
    form_timer: FormTimer | None = None
    """Times the candidate forms of the cheap layers for ``--lowering auto``; None: this backend cannot
    (its code is built on the device), and the form measured best for it on that kind of CPU is shipped
    (:func:`edgedistill.export.lowering.fallback_form`), labelled as such."""
    runs_here: Callable[[Bundle], tuple[bool, str, str]] = lambda bundle: (True, "", "")
    """Whether bench can run the bundle's artifacts on this machine: (ok, what stops it, what to do)."""


HOST_BACKENDS: Registry[HostBackend] = Registry("backend", ordered=True)


def register(backend: HostBackend) -> HostBackend:
    return HOST_BACKENDS.register(backend.name)(backend)


backend_names = HOST_BACKENDS.names
get_backend = HOST_BACKENDS.get


def timing_backend(target: Target) -> str:
    """The backend to export with when every backend of ``target`` is to be timed: tvm where the
    target has it (its bundle carries the verified ONNX as well, so onnxruntime is timed too),
    else the target's default."""
    return "tvm" if "tvm" in target.backends else target.default_backend


def option_flag(field_name: str) -> str:
    """``tune_trials`` -> ``--tune-trials``."""
    return "--" + field_name.replace("_", "-")
