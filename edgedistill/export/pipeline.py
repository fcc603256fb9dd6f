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
from deploy.backends.base import PRECISIONS
from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from deploy.manifest import sha256_file
from edgedistill.backends import HOST_BACKENDS, BuildContext, CompileJob, HostBackend, LocalArtifact, get_backend, option_flag
from edgedistill.errors import DataError, EdgeDistillError, Interrupted, exception_line
from edgedistill.export import accuracy, lowering, onnx_export
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
    tune_trials: int | None = 0
    """TVM MetaSchedule budget per model (0: untuned; None: the target's ``[tvm] tune_trials``, what the CLI passes
    when --tune-trials is not given)."""
    tuning_dir: str | None = None
    rpc_tracker: str | None = None
    """HOST:PORT of a TVM RPC tracker: tuning candidates are measured on a board of ``rpc_key`` behind it."""
    rpc_key: str | None = None
    fuse_shift: bool = False
    """TVM: each shift → 1×1 conv as one fused kernel (edgedistill.backends.tvm.fused_shift)."""
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
    calibration_method: str = "minmax"
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
        if value is not None and value < least:
            raise EdgeDistillError(f"{name} {value} is out of range", f"use {least} or more")
    if options.lowering != lowering.AUTO:
        lowering.get_lowering(options.lowering)
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


def _choose_precision(options: ExportOptions, target: Target, backend: HostBackend) -> str:
    """The bundle's precision: --precision when the backend offers it, else the backend's default for
    the target. Also refuses the int8-only options for other precisions and a too small calibration set."""
    from edgedistill.export.quantize import CALIBRATION_METHODS, MIN_CALIBRATION_SAMPLES

    precision = options.precision or backend.precision(target)
    if precision not in PRECISIONS:
        raise EdgeDistillError(f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if precision not in backend.precisions:
        why = backend.refused_precisions.get(precision) or f"it exports {', '.join(backend.precisions)} only"
        others = [name for name in target.backends if name != backend.name and precision in get_backend(name).precisions]
        hint = f"use --precision {' or '.join(backend.precisions)}"
        if others:
            hint += f", or --backend {others[0]} for {precision}"
        else:
            elsewhere = [b.name for b in HOST_BACKENDS.values() if precision in b.precisions]
            if elsewhere:
                hint += f"; {precision} is offered by the {' and '.join(elsewhere)} backend, on a target that has it " \
                        "(see edgedistill targets)"
        raise EdgeDistillError(f"--precision {precision} is not available with the {backend.name} backend: {why}", hint)
    if options.calibration_method not in CALIBRATION_METHODS:
        raise EdgeDistillError(f"unknown --calibration-method {options.calibration_method!r}",
                               f"use one of: {', '.join(CALIBRATION_METHODS)}")
    if precision != "int8" and options.calibration_method != ExportOptions.calibration_method:
        raise EdgeDistillError(f"--calibration-method applies to --precision int8 only, not {precision}",
                               "drop it, or pass --precision int8")
    if precision == "int8" and options.calibration_samples < MIN_CALIBRATION_SAMPLES:
        raise EdgeDistillError(f"--calibration-samples {options.calibration_samples} is too few to calibrate int8",
                               f"use {MIN_CALIBRATION_SAMPLES} or more real training images (256 is the default)")
    return precision


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
        self.test_split: accuracy.TestSplit | None = None
        """The test images every artifact's top-1 is measured on (None: not measured)."""
        self.device_subset: tuple[np.ndarray, np.ndarray] | None = None
        """The test images (uint8, fitted) and labels shipped for ``deploy.run eval``; measured here too."""
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
        measured = self._measure_accuracy(source, [LocalArtifact(onnx_path, "onnxruntime", "fp32"), *job.evaluate])
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

    def _measure_accuracy(self, source: ModelSource, local: list[LocalArtifact]) -> dict[str, dict[str, Any]]:
        """Top-1 of every artifact of this model that runs here, on the bundle's test split, keyed by
        the artifact's path in the bundle; quantized ones are flagged when they lose too much."""
        split = self.test_split
        if split is None or not source.trained:
            return {}
        from deploy.backends import open_runner
        from deploy.env import usable_cores
        from deploy.evaluate import subset_top1

        role, threads = source.role, usable_cores()
        runs, raw, kinds = {}, {}, {}
        for artifact in local:
            relative = artifact.path.relative_to(self.root).as_posix()
            batch = None if self.options.dynamic_batch and artifact.path.suffix == ".onnx" else self.options.batch
            raw[relative] = open_runner(artifact.backend, artifact.path, threads).run
            runs[relative] = accuracy.fixed_batch(raw[relative], batch)
            kinds[relative] = {"backend": artifact.backend, "precision": artifact.precision}
        self.report(f"{role}: measuring the top-1 of {len(runs)} artifact(s) on {split.description}")
        where = accuracy.measured_on()
        entries = {path: {**kinds[path], **figures, "split": split.description, "measured_on": where, "by": "edgedistill export"}
                   for path, figures in accuracy.top1(runs, split).items()}
        if self.device_subset is not None:  # the same images and code as 'deploy.run eval' on the device
            images, labels = self.device_subset
            data = source.checkpoint.data
            for path, run in raw.items():
                entries[path]["device_subset_top1"] = subset_top1(run, images, labels, data["mean"], data["std"],
                                                                  self.options.batch)["test_top1"]
        reference = next(iter(entries))  # the fp32 ONNX
        checkpoint_top1 = source.checkpoint.metrics.get("test_top1")
        if checkpoint_top1 is not None:
            delta = 100 * (entries[reference]["test_top1"] - checkpoint_top1)
            entries[reference]["vs_checkpoint_pt"] = round(delta, 4)
            same_run = split.run_dir == str(Path(source.checkpoint.source).resolve().parent)
            if split.runs_split and same_run and abs(delta) > 0.05:
                self.notes.append(f"{role}: the fp32 ONNX scores {delta:+.2f} pt against the checkpoint's test top-1 "
                                  "on the same images: the evaluation path or the export differs from training")
        self.notes += [f"{role}: flagged: {flag}" for flag in accuracy.drop_flags(entries, reference, self.options.max_accuracy_drop)]
        return entries

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
    precision = _choose_precision(options, target, backend)
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
    calibration_images = _calibration_images(precision, first.data, options) if precision == "int8" else None
    test_split, evaluation, full_split = _test_split(sources, options, report)
    results, entries = [], {}
    with atomic_directory(out, overwrite=options.overwrite) as root:
        builder = BundleBuilder(root, target, backend, options, report)
        builder.precision, builder.calibration, builder.test_split = precision, calibration_images, test_split
        device_eval = _ship_device_subset(builder, full_split, evaluation) if full_split and options.device_eval_samples else None
        calibration = backend.prepare(builder, first_source)
        for role, model_source in sources.items():
            result, entries[role] = builder.export_model(model_source, samples)
            results.append(result)
        data = first.data
        finish_bundle(root, {
            "target": target.raw,
            "backend": backend.name,
            "precision": precision,
            "evaluation": evaluation,
            "device_eval": device_eval,
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
    return ExportSummary(str(out), target.name, backend.name, size, time.perf_counter() - start, samples.source, results,
                         builder.notes, precision, test_split.description if test_split else None)


def _calibration_images(precision: str, data: dict, options: ExportOptions) -> Samples:
    """The real training images int8 is calibrated on; refused when the dataset cannot give enough."""
    from edgedistill.export.quantize import MIN_CALIBRATION_SAMPLES, calibration_set

    images = calibration_set(data, options.calibration_samples, options.data_dir)
    if len(images.inputs) < MIN_CALIBRATION_SAMPLES:
        raise DataError(f"only {len(images.inputs)} training images of {data['name']} for the int8 calibration",
                        f"int8 needs {MIN_CALIBRATION_SAMPLES} or more: check --data-dir")
    if len(images.inputs) < options.calibration_samples:
        options_note = f"{len(images.inputs)} of the {options.calibration_samples} asked for"
        images = Samples(images.inputs, f"{images.source}: {options_note}")
    return images


def _test_split(sources: dict[str, ModelSource], options: ExportOptions,
                report: Report) -> tuple[accuracy.TestSplit | None, dict[str, Any], accuracy.TestSplit | None]:
    """The test images the artifacts' top-1 is measured on, the manifest's ``evaluation`` entry, and
    the run's whole test split (the device subset is drawn from it)."""
    trained = [s for s in sources.values() if s.trained]
    if options.eval_limit == 0:
        return None, {"measured": False, "why": "--eval-limit 0"}, None
    if not trained:
        return None, {"measured": False, "why": "no trained network in the bundle"}, None
    try:
        full = accuracy.run_test_split(trained[0].checkpoint, options.data_dir, None)
        split = full if options.eval_limit is None else accuracy.run_test_split(trained[0].checkpoint, options.data_dir,
                                                                                options.eval_limit)
    except DataError as exc:
        report(f"warning: the artifacts' accuracy is not measured: {exc.message}")
        return None, {"measured": False, "why": exc.message}, None
    return split, {"measured": True, "split": split.description, "images": len(split.dataset),
                   "measured_on": accuracy.measured_on()}, full


def _ship_device_subset(builder: BundleBuilder, split: accuracy.TestSplit, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Write the seeded test subset ``deploy.run eval`` measures on the device; the manifest's ``device_eval``."""
    from deploy.evaluate import IMAGES, LABELS

    seed = 0
    images, labels = accuracy.device_subset(split, builder.options.device_eval_samples, seed)
    (builder.root / IMAGES).parent.mkdir(parents=True, exist_ok=True)
    np.save(builder.root / IMAGES, images)
    np.save(builder.root / LABELS, labels)
    builder.device_subset = (images, labels)
    return {"images": IMAGES, "labels": LABELS, "count": int(len(labels)), "seed": seed,
            "split": f"a seeded subset of {split.description}", "measured_on": evaluation["measured_on"],
            "sha256": {IMAGES: sha256_file(builder.root / IMAGES), LABELS: sha256_file(builder.root / LABELS)}}
