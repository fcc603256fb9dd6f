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
from deploy.manifest import Bundle
from deploy.measure import MeasureConfig
from edgedistill.bench.report import load_document
from edgedistill.checkpoints import save_model_checkpoint
from edgedistill.errors import EdgeDistillError
from edgedistill.export.sources import resolve_sources
from edgedistill.export.targets import host_can_run, load_target

LOCAL_BACKENDS = ("pytorch", "onnxruntime", "tvm")
Report = Callable[[str], None]


@dataclass
class BenchOptions:
    target: str = "host"
    backends: tuple[str, ...] = ()
    """Empty: every backend that can run here (or the board, with an RPC tracker)."""
    models: tuple[str, ...] = ("student", "teacher")
    threads: int | None = None
    config: MeasureConfig = field(default_factory=MeasureConfig)
    memory: bool = True
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    rpc_wait_s: float = 60.0
    imports: tuple[str, ...] = ()
    force: bool = False


def is_bundle(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def bundle_for_run(run_dir: Path, options: BenchOptions, report: Report) -> Path:
    """The run's bundle for ``options.target`` (exported once, reused while it exists)."""
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    target = load_target(options.target)
    backend = "tvm" if "tvm" in target.backends else target.default_backend
    out = run_dir / "bundles" / f"{target.name}-{backend}"
    if not is_bundle(out):
        report(f"exporting {run_dir} for {target.name} ({backend}) into {out}")
        export_bundle(run_dir, ExportOptions(target=options.target, backend=backend, out=str(out), models=options.models), report)
    return out


def _tvm_runs_here(bundle: Bundle) -> tuple[bool, str]:
    from edgedistill.export.targets import parse_target

    if not all((bundle.model(m).get("artifacts") or {}).get("tvm") for m in bundle.model_names()):
        return False, "the bundle has no TVM libraries (it was exported with another backend)"
    target = bundle.manifest["target"]
    return host_can_run(parse_target(target, f"{bundle.target_name} (from the bundle)"))


def _choose_backends(bundle: Bundle, options: BenchOptions, has_checkpoints: bool) -> list[str]:
    tvm_ok, why = _tvm_runs_here(bundle)
    if options.backends:
        for backend in options.backends:
            if backend not in LOCAL_BACKENDS:
                raise EdgeDistillError(f"unknown backend '{backend}'", f"local backends: {', '.join(LOCAL_BACKENDS)}; "
                                       "for a board use --rpc-tracker, for TensorRT run deploy.run on the Jetson")
            if backend == "tvm" and not tvm_ok:
                raise EdgeDistillError(f"cannot run the bundle's TVM code here: {why}",
                                       "use --rpc-tracker HOST:PORT --rpc-key KEY, or run 'python3 -m deploy.run bench' on the board")
            if backend == "pytorch" and not has_checkpoints:
                raise EdgeDistillError("the PyTorch reference needs the run's checkpoints, which are not on this machine",
                                       "bench the run directory instead of the bundle")
        return list(options.backends)
    if options.rpc_tracker:
        return []
    return [b for b in LOCAL_BACKENDS if (b != "tvm" or tvm_ok) and (b != "pytorch" or has_checkpoints)]


def _pytorch_document(bundle: Bundle, run_dir: Path | None, options: BenchOptions, threads: int) -> dict[str, Any]:
    from edgedistill.bench.torch_eager import bench_pytorch

    sources = resolve_sources(run_dir, options.models)
    with tempfile.TemporaryDirectory(prefix="edgedistill-bench-") as tmp:
        paths = {}
        for role, source in sources.items():  # one file per network, also for an untrained reference
            paths[role] = Path(tmp) / f"{role}.pt"
            save_model_checkpoint(paths[role], source.checkpoint)
        return bench_pytorch(paths, bundle.input_shape, threads, options.config, options.memory,
                             manifest_models=bundle.manifest["models"])


def _run_dir_of(bundle: Bundle) -> Path | None:
    checkpoint = bundle.model("student").get("checkpoint") if "student" in bundle.manifest["models"] else None
    return Path(checkpoint).parent if checkpoint and Path(checkpoint).is_file() else None


def run_bench(source: str | None, options: BenchOptions, report: Report | None = None) -> list[dict[str, Any]]:
    """Measure what ``options`` asks for; return the benchmark documents (imported ones last)."""
    report = report or (lambda _m: None)
    documents: list[dict[str, Any]] = []
    if source is not None:
        path = Path(source)
        if not path.exists():
            raise EdgeDistillError(f"no such bundle or run directory: {path}", "pass a bundle (edgedistill export) or a run directory")
        run_dir = None if is_bundle(path) else path
        bundle_dir = path if is_bundle(path) else bundle_for_run(path, options, report)
        bundle = Bundle.load(bundle_dir, verify=True, force=options.force or bool(options.rpc_tracker))
        run_dir = run_dir or _run_dir_of(bundle)
        models = [m for m in options.models if m in bundle.manifest["models"]]
        threads = options.threads or min(bundle.default_threads or usable_cores(), usable_cores())
        for backend in _choose_backends(bundle, options, run_dir is not None):
            report(f"measuring {', '.join(models)} with {backend} ({threads} threads)")
            if backend == "pytorch":
                documents.append(_pytorch_document(bundle, run_dir, options, threads))
            else:
                documents.append(bench_bundle(bundle, backend, models, threads, options.config, options.memory))
        if options.rpc_tracker:
            from edgedistill.bench.remote import bench_remote

            if not options.rpc_key:
                raise EdgeDistillError("--rpc-tracker needs --rpc-key (the board type, e.g. rpi4)")
            report(f"measuring {', '.join(models)} on a '{options.rpc_key}' board via {options.rpc_tracker}")
            documents.append(bench_remote(bundle, options.rpc_tracker, options.rpc_key, models, options.config, options.rpc_wait_s))
    documents += [load_document(p) for p in options.imports]
    if not documents:
        raise EdgeDistillError("nothing to benchmark", "pass a bundle or run directory, or --import RESULT.json")
    return documents
