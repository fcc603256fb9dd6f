"""``edgedistill export``: checkpoints → verified ONNX → prepared by the target's backend → one bundle.

For each model (student, teacher): put its cheap layers in their fastest form
(:mod:`edgedistill.export.lowering`), export ONNX, check it against PyTorch on real samples with
onnxruntime, then hand it to the backend (:mod:`edgedistill.backends`: onnxruntime ships the ONNX,
TVM compiles it, TensorRT checks the graph and builds the engine on the device).

Everything is written into a temporary directory that becomes the bundle only
when every step has succeeded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy import BUNDLE_FORMAT
from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from deploy.manifest import sha256_file
from edgedistill.backends import HOST_BACKENDS, BuildContext, CompileJob, HostBackend, get_backend, option_flag
from edgedistill.errors import EdgeDistillError, Interrupted, exception_line
from edgedistill.export import lowering, onnx_export
from edgedistill.export.bundle import directory_bytes, finish_bundle
from edgedistill.export.form_choice import choose_form
from edgedistill.export.parity import compare, require, run_batched
from edgedistill.export.samples import Samples, real_samples
from edgedistill.export.sources import MODEL_ROLES, ModelSource, resolve_sources
from edgedistill.export.targets import Target, load_target
from edgedistill.models import complexity
from edgedistill.utils.atomic import atomic_directory


Report = Callable[[str], None]


@dataclass
class ExportOptions:
    target: str = "host"
    models: tuple[str, ...] = MODEL_ROLES
    backend: str | None = None
    out: str | None = None
    which: str = "best"
    batch: int = 1
    image_size: int | None = None
    """Input height/width of the exported models (default: what they were trained at)."""
    dynamic_batch: bool = False
    tune_trials: int = 0
    tuning_dir: str | None = None
    parity_samples: int = 32
    calibration_samples: int = 256
    data_dir: str | None = None
    teacher_checkpoint: str | None = None
    overwrite: bool = False
    lowering: str = "auto"
    """Form of the cheap layers in the exported graph (edgedistill.export.lowering), or auto: the fastest measured."""


@dataclass
class ModelResult:
    role: str
    model: str
    trained: bool
    accuracy: float | None
    params: int
    macs: int
    executed_macs: int
    """MACs the exported form really executes (a one-hot depthwise conv executes K² per output)."""
    lowering: str
    onnx_bytes: int
    compiled_bytes: int | None
    parity: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ExportSummary:
    bundle: str
    target: str
    backend: str
    bundle_bytes: int
    seconds: float
    samples: str
    models: list[ModelResult]
    notes: list[str]


def default_bundle_dir(source: str | Path, target: Target, backend: str) -> Path:
    name = Path(source).resolve()
    name = name.parent.name if name.is_file() else name.name
    return Path("bundles") / f"{name}-{target.name}-{backend}"


def _choose_backend(target: Target, backend: str | None) -> HostBackend:
    chosen = get_backend(backend or target.default_backend)
    if chosen.name not in target.backends:
        raise EdgeDistillError(
            f"target {target.name} does not support the {chosen.name} backend",
            f"its backends: {', '.join(target.backends)}",
        )
    return chosen


def foreign_files(bundle: Path) -> list[str] | None:
    """The files in ``bundle`` that edgedistill did not write, or None when it is not a bundle of ours.

    A bundle of ours has our manifest.json, which lists every file export wrote; ``report/`` holds
    what ``edgedistill bench`` wrote into it. Anything else is the user's.
    """
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith(BUNDLE_FORMAT.split("/")[0] + "/"):
        return None
    ours = set(manifest.get("files") or {}) | {"manifest.json"}
    return sorted(
        rel for rel in (str(p.relative_to(bundle)) for p in bundle.rglob("*") if not p.is_dir())
        if rel not in ours and not rel.startswith("report/")
    )


def _check_out_dir(out: Path, overwrite: bool, source: Path) -> None:
    """Refuse, before any work, an --out that would lose a user's files or cannot be written."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise EdgeDistillError(f"{out} already exists", "choose another --out, or pass --force to replace a bundle of ours")
        resolved = out.resolve()
        if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved in source.resolve().parents \
                or resolved == source.resolve():
            raise EdgeDistillError(f"--out {out} is the current directory or holds the run being exported",
                                   "--force replaces only a bundle directory; choose another --out")
        foreign = foreign_files(out) if out.is_dir() and not out.is_symlink() else None
        if foreign is None:
            raise EdgeDistillError(f"{out} exists and is not an edgedistill bundle: --force will not replace it",
                                   "--force replaces only a bundle directory written by 'edgedistill export'; choose another --out")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise EdgeDistillError(f"bundle {out} holds files edgedistill did not write ({shown}): --force will not delete them",
                                   "move them out of the bundle, or choose another --out")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise EdgeDistillError(f"cannot write the bundle: {parent} is not a writable directory", "choose another --out")


def _check_options(options: ExportOptions, backend: HostBackend) -> None:
    """Every numeric option, and every option that only one backend reads, before any work starts."""
    for name, value, least in (("--batch-size", options.batch, 1), ("--parity-samples", options.parity_samples, 1),
                               ("--calibration-samples", options.calibration_samples, 1), ("--tune-trials", options.tune_trials, 0)):
        if value < least:
            raise EdgeDistillError(f"{name} {value} is out of range", f"use {least} or more")
    if options.lowering != lowering.AUTO:
        lowering.get_lowering(options.lowering)
    if options.image_size is not None and options.image_size < 1:
        raise EdgeDistillError(f"--image-size {options.image_size} is out of range", "use 1 or more")
    unknown = [m for m in options.models if m not in MODEL_ROLES]
    if unknown:
        raise EdgeDistillError(f"unknown model role {unknown[0]!r}", "use student, teacher or both")
    defaults = ExportOptions()
    for other in HOST_BACKENDS.values():
        for name in other.options - backend.options:
            if getattr(options, name) != getattr(defaults, name):
                raise EdgeDistillError(f"{option_flag(name)} applies to the {other.name} backend only, not {backend.name}",
                                       f"drop it, or pass --backend {other.name}")


def _check_input_shape(sources: dict[str, ModelSource], image_size: int | None) -> None:
    """Apply ``--image-size`` and make sure every network accepts its input before exporting anything."""
    import torch

    for source in sources.values():
        checkpoint = source.checkpoint
        trained_at = checkpoint.data["image_size"]
        if image_size is not None:
            checkpoint.data = {**checkpoint.data, "image_size": image_size}
        shape = (1, *checkpoint.input_shape)
        try:
            if min(shape) < 1:
                raise ValueError("every dimension must be at least 1")
            with torch.no_grad():
                checkpoint.build()(torch.zeros(shape))
        except (RuntimeError, ValueError) as exc:
            raise EdgeDistillError(
                f"input shape {shape} does not fit {checkpoint.spec.describe()}: {exception_line(exc, last=False)[:200]}",
                f"use an --image-size the network accepts (it was trained at {trained_at})",
            ) from None


class BundleBuilder(BuildContext):
    """Exports every model of one bundle into ``root`` (a temporary directory)."""

    def __init__(self, root: Path, target: Target, backend: HostBackend, options: ExportOptions, report: Report) -> None:
        super().__init__(root, target, options, report)
        self.backend = backend
        (root / "models").mkdir(parents=True)

    def export_model(self, source: ModelSource, samples: Samples) -> tuple[ModelResult, dict[str, Any]]:
        start = time.perf_counter()
        role, checkpoint = source.role, source.checkpoint
        model = checkpoint.build()
        shape = (self.options.batch, *checkpoint.input_shape)
        data = checkpoint.data
        onnx_path = self.root / "models" / f"{role}.onnx"
        metadata = {
            "role": role, "model": checkpoint.spec.to_dict(), "class_names": list(data["class_names"]),
            "mean": list(data["mean"]), "std": list(data["std"]), "input_layout": "NCHW", "dataset": data["name"],
        }
        reference = self._torch_outputs(model, samples.inputs)
        form_notes: list[str] = []
        choice = choose_form(model, checkpoint.spec.to_dict(), self.target, self.options.lowering, samples.inputs, reference,
                             self.options.batch, self.root, lambda message: self.report(f"{role}: {message}"), form_notes)
        self.notes += [f"{role}: {note}" for note in form_notes]
        self.report(f"{role}: exporting {checkpoint.spec.describe()} to ONNX (opset {self.target.onnx_opset}, {choice.form} form)")
        exported = onnx_export.export_onnx(choice.model, shape, onnx_path, opset=self.target.onnx_opset,
                                           dynamic_batch=self.options.dynamic_batch, metadata={**metadata, "lowering": choice.form})
        self.report(f"{role}: checking onnxruntime against PyTorch on {samples.source}")
        ort_out = run_batched(OnnxRuntimeRunner(onnx_path, threads=1).run, samples.inputs, self.options.batch)
        parity = [require(compare(reference, ort_out, ("pytorch", "onnxruntime")))]
        artifacts, compiled = self.backend.compile(self, CompileJob(role, onnx_path, shape, ort_out, samples, parity))
        cost = complexity(model, (1, *checkpoint.input_shape))
        executed = complexity(choice.model, (1, *checkpoint.input_shape)).macs
        accuracy = checkpoint.metrics.get("test_top1") if source.trained else None
        entry = {
            "onnx": f"models/{role}.onnx",
            "opset": exported.opset,
            "artifacts": artifacts,
            "accuracy": {"val_top1": checkpoint.metrics.get("val_top1"), "test_top1": accuracy} if source.trained else None,
            "trained": source.trained,
            "note": source.note or None,
            "params": cost.params, "macs": cost.macs, "executed_macs": executed,
            "lowering": choice.manifest(),
            "arch": checkpoint.spec.arch,
            "cheap": checkpoint.spec.cheap.to_dict() if checkpoint.spec.cheap else None,
            "model": checkpoint.spec.describe(),
            "checkpoint": str(Path(checkpoint.source).resolve()) if source.trained else checkpoint.source,
            "checkpoint_sha256": sha256_file(Path(checkpoint.source)) if source.trained else None,
            "parity": [p.to_dict() for p in parity],
        }
        if source.note:
            self.notes.append(f"{role}: {source.note}")
        result = ModelResult(
            role, checkpoint.spec.describe(), source.trained, accuracy, cost.params, cost.macs, executed, choice.form,
            onnx_path.stat().st_size, compiled, [p.to_dict() for p in parity], time.perf_counter() - start,
        )
        return result, entry

    @staticmethod
    def _torch_outputs(model: Any, inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(inputs)).numpy()



def export_bundle(source: str | Path, options: ExportOptions, report: Report | None = None) -> ExportSummary:
    """Export the networks of a run directory (or checkpoint) into a bundle for ``options.target``."""
    try:
        return _export_bundle(source, options, report or (lambda _m: None))
    except KeyboardInterrupt:
        raise Interrupted("export interrupted", "nothing was written (the bundle is built in a temporary directory); "
                                                "run the same command again") from None


def _export_bundle(source: str | Path, options: ExportOptions, report: Report) -> ExportSummary:
    start = time.perf_counter()
    target = load_target(options.target)
    backend = _choose_backend(target, options.backend)
    _check_options(options, backend)
    out = Path(options.out) if options.out else default_bundle_dir(source, target, backend.name)
    _check_out_dir(out, options.overwrite, Path(source))
    backend.check_toolchain(target)
    sources = resolve_sources(source, options.models, options.which, options.teacher_checkpoint)
    _check_input_shape(sources, options.image_size)
    first_source = next(iter(sources.values()))
    first = first_source.checkpoint
    count = max(options.parity_samples, options.batch)
    samples = real_samples(first.data, "test", count - count % options.batch, options.data_dir)
    if samples.source.startswith("synthetic"):
        report(f"warning: parity is checked on {samples.source}")
    results, entries = [], {}
    with atomic_directory(out, overwrite=options.overwrite) as root:
        builder = BundleBuilder(root, target, backend, options, report)
        calibration = backend.prepare(builder, first_source)
        for role, model_source in sources.items():
            result, entries[role] = builder.export_model(model_source, samples)
            results.append(result)
        data = first.data
        finish_bundle(root, {
            "target": target.raw,
            "backend": backend.name,
            "precision": backend.precision(target),
            "input": {"name": onnx_export.INPUT_NAME, "shape": [options.batch, *first.input_shape], "dtype": "float32",
                      "layout": "NCHW", "mean": list(data["mean"]), "std": list(data["std"]),
                      "dynamic_batch": options.dynamic_batch},
            "output": {"name": onnx_export.OUTPUT_NAME, "shape": [options.batch, int(data["num_classes"])]},
            "class_names": list(data["class_names"]),
            "dataset": data["name"],
            "parity_samples": samples.source,
            "calibration": calibration,
            "models": entries,
            "notes": builder.notes,
        })
        size = directory_bytes(root)
    return ExportSummary(str(out), target.name, backend.name, size, time.perf_counter() - start, samples.source, results, builder.notes)
