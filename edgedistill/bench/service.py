"""``edgedistill bench``: which backends to measure where, for a bundle or a run directory.

* a run directory is exported first (into ``RUN_DIR/bundles/<target>-<backend>``, reused next time);
* local backends: PyTorch eager (the reference, from the run's checkpoints),
  onnxruntime (every bundle), TVM (when the bundle's code runs on this CPU);
* a remote board through a TVM RPC tracker (``--rpc-tracker``/``--rpc-key``);
* results measured on a device by the bundle's own runner (``--import``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.bench import bench_bundle
from deploy.env import usable_cores
from deploy.manifest import Bundle, load_manifest, sha256_file
from deploy.measure import MeasureConfig
from edgedistill.backends import backend_names, get_backend, timing_backend
from edgedistill.bench.report import load_imports, merge_evaluations
from edgedistill.checkpoints import ModelCheckpoint, load_model_checkpoint, save_model_checkpoint
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import unknown_name
from edgedistill.export.sources import untrained_reference
from edgedistill.export.targets import load_target

Report = Callable[[str], None]


@dataclass
class BenchOptions:
    target: str = "host"
    backends: tuple[str, ...] = ()
    """Empty: every backend that can run here (or the board, with an RPC tracker)."""
    models: tuple[str, ...] = ("student", "teacher")
    threads: tuple[int, ...] = ()
    """Thread counts to measure at, each on its own; empty: the target's, at most this machine's cores."""
    config: MeasureConfig = field(default_factory=MeasureConfig)
    memory: bool = True
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    rpc_wait_s: float = 60.0
    imports: tuple[str, ...] = ()
    force: bool = False


def is_bundle(path: Path) -> bool:
    return (path / "manifest.json").is_file()


BUNDLE_PARTS = ("models", "deploy")
"""Directories every bundle has and a run directory never has."""


def check_not_broken_bundle(path: Path) -> None:
    """A directory that looks like a bundle (models/ or deploy/) but has lost its manifest.json."""
    if path.is_dir() and not (path / "manifest.json").exists() and any((path / part).is_dir() for part in BUNDLE_PARTS):
        found = ", ".join(f"{part}/" for part in BUNDLE_PARTS if (path / part).is_dir())
        raise EdgeDistillError(
            f"{path} looks like a bundle (it has {found}) but its manifest.json is missing",
            "a bundle cannot be checked or run without its manifest: re-export it "
            "('edgedistill export RUN_DIR --target TARGET --out NEW_DIR'), or copy the whole bundle again",
        )


def _run_bundle_dir(run_dir: Path, target_name: str) -> tuple[Path, Any, str]:
    target = load_target(target_name)
    backend = timing_backend(target)
    return run_dir / "bundles" / f"{target.name}-{backend}", target, backend


def default_report_dir(source: str | None, options: BenchOptions) -> Path | None:
    """Where the report goes without --out (``BUNDLE/report``, ``./bench-report`` for --import only),
    known before anything is measured; None when the source is not there (run_bench says why)."""
    if source is None:
        return Path("bench-report")
    path = Path(source)
    if not path.is_dir():
        return None
    if is_bundle(path):
        return path / "report"
    check_not_broken_bundle(path)
    return _run_bundle_dir(path, options.target)[0] / "report"


def _checkpoints_unchanged(entries: dict[str, Any]) -> bool:
    """Every trained network of a manifest still has its checkpoint, byte for byte."""
    for entry in entries.values():
        if entry.get("trained"):
            path = Path(entry.get("checkpoint") or "")
            if not path.is_file() or sha256_file(path) != entry.get("checkpoint_sha256"):
                return False
    return True


def bundle_for_run(run_dir: Path, options: BenchOptions, report: Report) -> Path:
    """The run's bundle for ``options.target``: reused while it holds the asked models and their
    checkpoints are unchanged, re-exported otherwise (after a resume or retraining)."""
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    out, target, backend = _run_bundle_dir(run_dir, options.target)
    if is_bundle(out):
        entries = load_manifest(out)["models"]
        if set(options.models) <= entries.keys() and _checkpoints_unchanged(entries):
            return out
    report(f"exporting {run_dir} for {target.name} ({backend}) into {out}")
    export_bundle(run_dir, ExportOptions(target=options.target, backend=backend, out=str(out), models=options.models,
                                         overwrite=True), report)
    return out


PYTORCH = "pytorch"  # the eager reference, measured from the run's checkpoints (not a bundle backend)


def local_backends() -> list[str]:
    return [PYTORCH, *backend_names()]


def _choose_backends(bundle: Bundle, options: BenchOptions, has_checkpoints: bool) -> list[str]:
    """The backends to measure here: the asked ones (each must run here), or every one that can."""
    runs = {name: get_backend(name).runs_here(bundle) for name in backend_names()}
    runs[PYTORCH] = (has_checkpoints, "the PyTorch reference needs the checkpoints the bundle was exported from, "
                     "which are not on this machine or have changed since", "re-export the bundle, or leave out --backend pytorch")
    if options.backends:
        for backend in options.backends:
            if backend not in runs:
                error = unknown_name("backend", backend, local_backends())
                error.hint = f"{error.hint}; for a board use --rpc-tracker, or run 'python3 -m deploy.run bench' on it"
                raise error
            ok, why, hint = runs[backend]
            if not ok:
                raise EdgeDistillError(why, hint)
        return list(options.backends)
    if options.rpc_tracker:
        return []
    return [name for name in local_backends() if runs[name][0]]


def pytorch_sources(bundle: Bundle, models: list[str]) -> dict[str, Path | ModelCheckpoint] | None:
    """The exact networks the bundle was exported from, if their checkpoints are still here and unchanged:
    the checkpoint file of each trained one, and an untrained reference rebuilt in memory from the student."""
    entries = {m: bundle.model(m) for m in models}
    if not _checkpoints_unchanged(entries):
        return None
    found: dict[str, Path | ModelCheckpoint] = {m: Path(e["checkpoint"]) for m, e in entries.items() if e.get("trained")}
    for model, entry in entries.items():
        if not entry.get("trained"):  # an untrained reference: rebuilt identically from the student
            student = bundle.model("student")
            if not student.get("trained") or not Path(student.get("checkpoint") or "").is_file():
                return None
            found[model] = untrained_reference(load_model_checkpoint(student["checkpoint"])).checkpoint
    return found


def _pytorch_document(
    bundle: Bundle, sources: dict[str, Path | ModelCheckpoint], options: BenchOptions, threads: int
) -> dict[str, Any]:
    from edgedistill.bench.torch_eager import bench_pytorch

    with tempfile.TemporaryDirectory(prefix="edgedistill-bench-") as tmp:
        paths = {}
        for role, source in sources.items():  # the memory probe reads a file: write the in-memory references out
            if isinstance(source, Path):
                paths[role] = source
            else:
                paths[role] = Path(tmp) / f"{role}.pt"
                save_model_checkpoint(paths[role], source)
        return bench_pytorch(bundle, paths, threads, options.config, options.memory)


@dataclass
class BenchResult:
    documents: list[dict[str, Any]]
    """Benchmark documents (edgedistill-bench/1), imported ones last."""
    bundle: Path | None
    """The bundle that was measured (exported first when the source was a run directory)."""


def run_bench(source: str | None, options: BenchOptions, report: Report | None = None) -> BenchResult:
    """Measure what ``options`` asks for."""
    report = report or (lambda _m: None)
    documents: list[dict[str, Any]] = []
    bundle_dir = None
    if source is not None:
        path = Path(source)
        if not path.exists():
            raise EdgeDistillError(f"no such bundle or run directory: {path}", "pass a bundle (edgedistill export) or a run directory")
        if not is_bundle(path):
            check_not_broken_bundle(path)
        bundle_dir = path if is_bundle(path) else bundle_for_run(path, options, report)
        bundle = Bundle.load(bundle_dir, verify=True, force=options.force or bool(options.rpc_tracker))
        models = [m for m in options.models if m in bundle.manifest["models"]]
        thread_counts = options.threads or (min(bundle.default_threads or usable_cores(), usable_cores()),)
        sources = pytorch_sources(bundle, models)
        for threads in thread_counts:
            for backend in _choose_backends(bundle, options, sources is not None):
                report(f"measuring {', '.join(models)} with {backend} ({threads} threads)")
                if backend == PYTORCH:
                    documents.append(_pytorch_document(bundle, sources, options, threads))
                else:
                    documents.append(bench_bundle(bundle, backend, models, threads, options.config, options.memory))
        if options.rpc_tracker:
            from edgedistill.bench.remote import bench_remote

            if not options.rpc_key:
                raise EdgeDistillError("--rpc-tracker needs --rpc-key (the board type, e.g. rpi4)")
            report(f"measuring {', '.join(models)} on a '{options.rpc_key}' board via {options.rpc_tracker}")
            documents.append(bench_remote(bundle, options.rpc_tracker, options.rpc_key, models, options.config, options.rpc_wait_s,
                                          check_board=not options.force))
    imported, evaluations = load_imports(options.imports)
    documents += imported
    merge_evaluations(documents, evaluations)
    if not documents:
        raise EdgeDistillError("nothing to benchmark", "pass a bundle or run directory, or --import RESULT.json")
    return BenchResult(documents, bundle_dir)
