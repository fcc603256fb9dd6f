"""``edgedistill export``: checkpoints → verified ONNX → prepared by the target's backend → one bundle.

For each model (student, teacher): put its cheap layers in their fastest form
(:mod:`edgedistill.export.lowering`), export ONNX, check it against PyTorch on real samples with
onnxruntime, then hand it to the backend (:mod:`edgedistill.backends`: onnxruntime ships the ONNX,
TVM compiles it, TensorRT checks the graph and builds the engine on the device).

Everything is written into a temporary directory that becomes the bundle only
when every step has succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from deploy.manifest import sha256_file
from edgedistill.backends import HOST_BACKENDS, BuildContext, CompileJob, HostBackend, LocalArtifact, get_backend, option_flag
from edgedistill.errors import EdgeDistillError, Interrupted, exception_line
from edgedistill.export import lowering, onnx_export
from edgedistill.export.artifact_eval import ArtifactEvaluation
from edgedistill.export.bundle import check_out_dir, directory_bytes, finish_bundle
from edgedistill.export.form_choice import choose_form
from edgedistill.export.parity import compare, require, run_batched
from edgedistill.export.precision import DEFAULT_CALIBRATION_METHOD, calibration_images, choose_precision
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
    tune_trials: int | None = 0
    """TVM MetaSchedule budget per model (0: untuned; None: the target's ``[tvm] tune_trials``, what the CLI passes
    when --tune-trials is not given)."""
    tuning_dir: str | None = None
    rpc_tracker: str | None = None
    """HOST:PORT of a TVM RPC tracker: tuning candidates are measured on a board of ``rpc_key`` behind it."""
    rpc_key: str | None = None
    parity_samples: int = 32
    calibration_samples: int = 256
    data_dir: str | None = None
    teacher_checkpoint: str | None = None
    overwrite: bool = False
    lowering: str = "auto"
    """Form of the cheap layers (edgedistill.export.lowering), or auto: the fastest timed with the backend that ships
    it (edgedistill.export.form_choice); TVM picks its library's form apart from the graph's."""
    precision: str | None = None
    """fp32 | fp16 | int8 (None: the backend's default for the target); the backend's ``precisions`` say what it offers."""
    calibration_method: str = DEFAULT_CALIBRATION_METHOD
    """int8 calibration: minmax (onnxruntime's default), entropy or percentile."""
    eval_limit: int | None = None
    """Test images each artifact's top-1 is measured on (None: the whole test split of the run; 0: not measured)."""
    max_accuracy_drop: float = 1.0
    """Points of top-1 a quantized artifact may lose against the fp32 one before it is flagged."""
    device_eval_samples: int = 1000
    """Test images shipped in the bundle for ``python3 -m deploy.run eval`` on the device (0: none)."""


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
    """The form of the ONNX graph, and of a backend's code where that backend chose another (``onehot (tvm: trained)``)."""
    onnx_bytes: int
    compiled_bytes: int | None
    parity: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    artifact_accuracy: list[dict[str, Any]] = field(default_factory=list)
    """Top-1 of each artifact measured here on the test split (path, backend, precision, test_top1, ...)."""


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
    precision: str = "fp32"
    evaluation: str | None = None
    """The images and machine the artifacts' top-1 was measured on (None: not measured)."""


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


def _check_options(options: ExportOptions, backend: HostBackend) -> None:
    """Every numeric option, and every option that only one backend reads, before any work starts."""
    for name, value, least in (("--batch-size", options.batch, 1), ("--parity-samples", options.parity_samples, 1),
                               ("--calibration-samples", options.calibration_samples, 1), ("--tune-trials", options.tune_trials, 0)):
        if value is not None and value < least:
            raise EdgeDistillError(f"{name} {value} is out of range", f"use {least} or more")
    if options.lowering != lowering.AUTO:
        lowering.check_requested(options.lowering, backend.name)
    if options.image_size is not None and options.image_size < 1:
        raise EdgeDistillError(f"--image-size {options.image_size} is out of range", "use 1 or more")
    if options.eval_limit is not None and options.eval_limit < 0:
        raise EdgeDistillError(f"--eval-limit {options.eval_limit} is out of range",
                               "use 0 (do not measure), N images, or leave it out for the whole test split")
    if options.device_eval_samples < 0:
        raise EdgeDistillError(f"--device-eval-samples {options.device_eval_samples} is out of range", "use 0 (none) or more")
    if not options.max_accuracy_drop >= 0:
        raise EdgeDistillError(f"--max-accuracy-drop {options.max_accuracy_drop} is out of range", "use 0 or more points")
    unknown = [m for m in options.models if m not in MODEL_ROLES]
    if unknown:
        raise EdgeDistillError(f"unknown model role {unknown[0]!r}", "use student, teacher or both")
    defaults = ExportOptions()
    for other in HOST_BACKENDS.values():
        for name in other.options - backend.options:
            if getattr(options, name) not in (getattr(defaults, name), None):  # None: not given
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
        self.evaluation = ArtifactEvaluation(None, {"measured": False, "why": "not settled"})
        """The test images every artifact's top-1 is measured on (:mod:`edgedistill.export.artifact_eval`)."""
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
        graph_backend = get_backend(self.backend.graph_form_by) if self.backend.graph_form_by else self.backend
        choice = choose_form(self, graph_backend, role, model, checkpoint.spec.to_dict(), samples.inputs, reference)
        self.report(f"{role}: exporting {checkpoint.spec.describe()} to ONNX (opset {self.target.onnx_opset}, {choice.form} form)")
        exported = onnx_export.export_onnx(choice.model, shape, onnx_path, opset=self.target.onnx_opset,
                                           dynamic_batch=self.options.dynamic_batch, metadata={**metadata, "lowering": choice.form})
        self.report(f"{role}: checking onnxruntime against PyTorch on {samples.source}")
        ort_out = run_batched(OnnxRuntimeRunner(onnx_path, threads=1).run, samples.inputs, self.options.batch)
        parity = [require(compare(reference, ort_out, ("pytorch", "onnxruntime")))]
        job = CompileJob(role, onnx_path, shape, ort_out, samples, parity, choice.form, model, checkpoint.spec.to_dict(), reference)
        artifacts, compiled = self.backend.compile(self, job)
        measured = self.evaluation.measure(self.root, source, [LocalArtifact(onnx_path, "onnxruntime", "fp32"), *job.evaluate],
                                           self.options, self.report, self.notes)
        cost = complexity(model, (1, *checkpoint.input_shape))
        executed = choice.executed_macs((1, *checkpoint.input_shape))
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
            "artifact_accuracy": measured or None,
        }
        if source.note:
            self.notes.append(f"{role}: {source.note}")
        result = ModelResult(
            role, checkpoint.spec.describe(), source.trained, accuracy, cost.params, cost.macs, executed,
            _forms_label(choice.form, artifacts),
            onnx_path.stat().st_size, compiled, [p.to_dict() for p in parity], time.perf_counter() - start,
            [{"path": path, **figures} for path, figures in measured.items()],
        )
        return result, entry

    @staticmethod
    def _torch_outputs(model: Any, inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(inputs)).numpy()



def _forms_label(graph_form: str, artifacts: dict[str, Any]) -> str:
    """``onehot``, or ``onehot (tvm: trained)`` where a backend compiled its code from another form."""
    others = [f"{name}: {entry['lowering']['form']}" for name, entry in artifacts.items()
              if (entry.get("lowering") or {}).get("form", graph_form) != graph_form]
    return graph_form + (f" ({', '.join(others)})" if others else "")


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
    precision = choose_precision(options, target, backend)
    out = Path(options.out) if options.out else default_bundle_dir(source, target, backend.name)
    check_out_dir(out, options.overwrite, Path(source))
    backend.check_toolchain(target)
    sources = resolve_sources(source, options.models, options.which, options.teacher_checkpoint)
    _check_input_shape(sources, options.image_size)
    first_source = next(iter(sources.values()))
    first = first_source.checkpoint
    count = max(options.parity_samples, options.batch)
    samples = real_samples(first.data, "test", count - count % options.batch, options.data_dir)
    if samples.source.startswith("synthetic"):
        report(f"warning: parity is checked on {samples.source}")
    calibration = calibration_images(first.data, options) if precision == "int8" else None
    evaluation = ArtifactEvaluation.settle(sources, options, report)
    results, entries = [], {}
    with atomic_directory(out, overwrite=options.overwrite) as root:
        builder = BundleBuilder(root, target, backend, options, report)
        builder.precision, builder.calibration, builder.evaluation = precision, calibration, evaluation
        device_eval = evaluation.ship_device_subset(root, options.device_eval_samples)
        calibration_entry = backend.prepare(builder, first_source)
        for role, model_source in sources.items():
            result, entries[role] = builder.export_model(model_source, samples)
            results.append(result)
        data = first.data
        finish_bundle(root, {
            "target": target.raw,
            "backend": backend.name,
            "precision": precision,
            "evaluation": evaluation.manifest,
            "device_eval": device_eval,
            "input": {"name": onnx_export.INPUT_NAME, "shape": [options.batch, *first.input_shape], "dtype": "float32",
                      "layout": "NCHW", "mean": list(data["mean"]), "std": list(data["std"]),
                      "dynamic_batch": options.dynamic_batch},
            "output": {"name": onnx_export.OUTPUT_NAME, "shape": [options.batch, int(data["num_classes"])]},
            "class_names": list(data["class_names"]),
            "dataset": data["name"],
            "parity_samples": samples.source,
            "calibration": calibration_entry,
            "models": entries,
            "notes": builder.notes,
        })
        size = directory_bytes(root)
    return ExportSummary(str(out), target.name, backend.name, size, time.perf_counter() - start, samples.source, results,
                         builder.notes, precision, evaluation.split.description if evaluation.split else None)
