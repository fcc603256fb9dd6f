"""The device CLI: ``python3 -m deploy.run {bench,eval,verify,build-engine,info}``.

Only argument parsing and printing live here; the work is done by
:mod:`deploy.bench`, :mod:`deploy.manifest` and :mod:`deploy.trt_build`.
Every failure a person can fix ends as one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from deploy.atomic import write_json_atomic
from deploy.errors import DeployError
from deploy.backends import PRECISIONS, backend_names
from deploy.manifest import Bundle, default_bundle_dir


def _threads(bundle: Bundle, requested: Optional[int]) -> int:
    from deploy.env import usable_cores

    if requested is not None and requested < 1:
        raise DeployError(f"--threads must be >= 1, got {requested}")
    return requested or bundle.default_threads or usable_cores()


def _load(args: argparse.Namespace) -> Bundle:
    return Bundle.load(Path(args.bundle), verify=True, force=args.force)


def cmd_bench(args: argparse.Namespace) -> int:
    from deploy.bench import bench_bundle
    from deploy.measure import MeasureConfig
    from deploy.report import format_table

    bundle = _load(args)
    backend = args.backend or bundle.default_backend
    try:
        config = MeasureConfig(
            warmup_runs=args.warmup_runs,
            warmup_seconds=args.warmup_time,
            min_runs=args.runs,
            min_seconds=args.min_time,
            repeats=args.repeats,
        )
    except ValueError as exc:
        raise DeployError(f"bad measurement option: {exc}", "see python3 -m deploy.run bench --help") from None
    document = bench_bundle(
        bundle,
        backend,
        bundle.model_names(args.model),
        _threads(bundle, args.threads),
        config,
        memory=not args.no_memory,
        memory_runs=args.memory_runs,
        precision=args.precision,
        runtime_only=True,
    )
    out = Path(args.out) if args.out else bundle.root / "results" / f"{socket.gethostname()}-{backend}.json"
    return _emit(document, out, args.json, format_table)


def cmd_eval(args: argparse.Namespace) -> int:
    from deploy.evaluate import eval_bundle, format_eval_table

    bundle = _load(args)
    backend = args.backend or bundle.default_backend
    document = eval_bundle(bundle, backend, bundle.model_names(args.model), _threads(bundle, args.threads),
                           precision=args.precision, limit=args.limit)
    return _emit(document, Path(args.out) if args.out else None, args.json, format_eval_table)


def _emit(document: Dict[str, Any], out: Optional[Path], as_json: bool, table: Callable[[Dict[str, Any]], str]) -> int:
    """Write the result JSON to ``out`` (when given), then print it, or its table and where it went."""
    if out is not None:
        write_json_atomic(out, document)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(table(document))
        if out is not None:
            print(f"result written to {out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from deploy.bench import check_output, make_input
    from deploy.manifest import target_arch
    from deploy.backends import open_runner

    bundle = _load(args)
    count = len(bundle.manifest["files"])
    arch = target_arch(bundle.manifest.get("target") or {}) or "unstated"
    print(f"ok: {count} files match manifest.json; target '{bundle.target_name}' ({arch})")
    backend = args.backend or bundle.default_backend
    x = make_input(bundle.input_shape, bundle.input_dtype)
    for model in bundle.model_names(args.model):
        runner = open_runner(backend, bundle.artifact_path(model, backend), _threads(bundle, args.threads), runtime_only=True)
        output = check_output(model, runner.run(x), bundle.output_shape)
        print(f"ok: {model} runs with {backend}, output {tuple(output.shape)}")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from deploy.trt_build import build_engine, load_calibration

    bundle = _load(args)
    for model in bundle.model_names(args.model):
        spec = (bundle.model(model).get("artifacts") or {}).get("tensorrt") or {}
        precision = args.precision or spec.get("precision") or "fp16"
        calibration_path = bundle.calibration_path()
        calibration = load_calibration(calibration_path) if precision == "int8" and calibration_path else None
        engine = bundle.engine_path(model, args.precision)
        print(f"building the {model} engine ({precision}) from {bundle.model(model)['onnx']} ...", flush=True)
        record = build_engine(
            bundle.onnx_path(model),
            engine,
            precision,
            bundle.input_shape,
            timing_cache=engine.parent / "tensorrt.timing.cache",
            calibration=calibration,
            workspace_mb=args.workspace_mb,
            use_trtexec=args.trtexec,
        )
        versions = record["versions"]
        print(
            f"ok: {bundle.relative(engine)} built as {record['precision_built']} in {record['build_seconds']:.1f} s "
            f"(TensorRT {versions['tensorrt']}, CUDA {versions['cuda_runtime']}, JetPack {versions['jetpack']}, GPU {versions['gpu']})"
        )
    return 0


def _info(bundle: Bundle) -> Dict[str, Any]:
    from deploy.env import environment_record
    from deploy.trt_build import read_engine_record

    models: Dict[str, Any] = {}
    for model in bundle.model_names():
        entry = bundle.model(model)
        engine = bundle.engine_path(model)
        models[model] = {
            "arch": entry.get("arch"),
            "cheap": entry.get("cheap"),
            "params": entry.get("params"),
            "macs": entry.get("macs"),
            "accuracy": entry.get("accuracy"),
            "artifacts": sorted((entry.get("artifacts") or {}).keys()),
            "tensorrt_engine": read_engine_record(engine) if engine.is_file() else None,
        }
    return {
        "bundle": str(bundle.root),
        "target": bundle.target_name,
        "backend": bundle.default_backend,
        "precision": bundle.manifest.get("precision"),
        "created": bundle.manifest.get("created"),
        "input": bundle.manifest.get("input"),
        "output": bundle.manifest.get("output"),
        "models": models,
        "environment": environment_record(bundle.default_threads or 0),
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = _info(Bundle.load(Path(args.bundle), verify=False, force=True))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bundle {info['bundle']}: target {info['target']}, backend {info['backend']}, precision {info['precision']}, created {info['created']}")
    print(f"input {info['input']['shape']} {info['input'].get('dtype', 'float32')}, output {(info['output'] or {}).get('shape')}")
    for name, model in info["models"].items():
        engine = model["tensorrt_engine"]
        built = f", engine {engine['precision_built']} (TensorRT {engine['versions']['tensorrt']})" if engine else ""
        print(
            f"  {name}: {model['arch']} ({model['cheap'] or 'standard'}), {model['params']} params, {model['macs']} MACs, "
            f"accuracy {model['accuracy']}, artifacts {', '.join(model['artifacts']) or 'onnx only'}{built}"
        )
    env = info["environment"]
    print(f"this machine: {env['hostname']} {env['machine']} {env['cpu_model']}, {env['cores']} cores, runtimes {env['runtimes']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", default=str(default_bundle_dir()), help="bundle directory (default: the one containing deploy/)")
    common.add_argument("--force", action="store_true", help="skip the check that the bundle's target matches this machine")
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("--model", choices=["student", "teacher", "both"], default="both")
    models.add_argument("--threads", type=int, help="CPU threads (default: the target's, else all usable cores)")

    parser = argparse.ArgumentParser(prog="python3 -m deploy.run", description="Run an edgedistill deploy bundle on this device.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", parents=[common, models], help="measure latency and memory, student vs teacher")
    bench.add_argument("--backend", choices=backend_names(), help="default: the bundle's backend")
    bench.add_argument("--precision", choices=PRECISIONS,
                       help="which artifact to run: a TensorRT engine built at it, or onnxruntime's fp32 / fp16 / int8 model "
                            "(default: the bundle's precision; onnxruntime times the fp32 model beside an fp16 or int8 one)")
    bench.add_argument("--runs", type=int, default=100, help="minimum timed runs per model (default 100)")
    bench.add_argument("--min-time", type=float, default=2.0, help="minimum timed seconds per model (default 2)")
    bench.add_argument("--repeats", type=int, default=5, help="repeat blocks, alternating student/teacher (default 5)")
    bench.add_argument("--warmup-runs", type=int, default=10)
    bench.add_argument("--warmup-time", type=float, default=0.2)
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probes")
    bench.add_argument("--memory-runs", type=int, default=10, help="inferences per memory probe (default 10)")
    bench.add_argument("--out", help="result JSON path (default: BUNDLE/results/HOST-BACKEND.json)")
    bench.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    bench.set_defaults(func=cmd_bench)

    evaluate = sub.add_parser("eval", parents=[common, models],
                              help="top-1 of each artifact on the bundle's test subset, measured on this device")
    evaluate.add_argument("--backend", choices=backend_names(), help="default: the bundle's backend")
    evaluate.add_argument("--precision", choices=PRECISIONS, help="which artifact (default: the bundle's precision)")
    evaluate.add_argument("--limit", type=int, help="the first N images of the subset only (no comparison with export then)")
    evaluate.add_argument("--out", help="also write the result JSON here")
    evaluate.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    evaluate.set_defaults(func=cmd_eval)

    verify = sub.add_parser("verify", parents=[common, models], help="check hashes and target, run each model once")
    verify.add_argument("--backend", choices=backend_names(), help="default: the bundle's backend")
    verify.set_defaults(func=cmd_verify)

    engine = sub.add_parser("build-engine", parents=[common], help="build the TensorRT engine(s) on this device")
    engine.add_argument("--model", choices=["student", "teacher", "both"], default="both")
    engine.add_argument("--precision", choices=PRECISIONS, help="default: the bundle's TensorRT precision")
    engine.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (default 1024 MiB)")
    engine.add_argument("--trtexec", action="store_true", help="use trtexec even when the Python API is available")
    engine.set_defaults(func=cmd_build_engine)

    info = sub.add_parser("info", parents=[common], help="describe the bundle and this machine")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # unwritable --out, full disk, a file vanished under us
        print(f"error: {exc.strerror or exc}: {exc.filename or ''} (check the path and free space)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
