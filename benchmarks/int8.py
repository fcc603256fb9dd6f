#!/usr/bin/env python3
"""fp32 against int8, teacher against student, side by side: accuracy, latency, weight bytes.

Three modes, each timed with the project's method (deploy/measure.py), every network of one table
interleaved in one run so the ratios share the machine state:

* ``--run DIR`` (a trained run with a teacher and a student, e.g. ``edgedistill train --method
  mutual``): exported by the real pipeline at ``--precision int8`` (onnxruntime static QDQ,
  calibrated on training images), so the bundle holds the fp32 ONNX and the int8 model of both
  networks with the top-1 export measured on each of them; this script times the four.
* ``--train KIND...``: one such run per cheap kind, trained by ``edgedistill train --method mutual`` at the
  accuracy benchmark's budget (benchmarks/accuracy.py; reused once finished), four rows each.
* ``--untrained ARCH:SIZE`` (e.g. ``imagenet_resnet18:224``): the teacher and each cheap kind,
  freshly initialised (latency and memory only, no accuracy), quantized with the same settings
  on random calibration inputs.

Writes benchmarks/results/<name>.{json,md} and prints the table.

    python benchmarks/int8.py --train group depthwise shift          # one mutual run per kind (trained once, ~5 min each)
    python benchmarks/int8.py --run runs/mutual                      # accuracy + latency of a trained run
    python benchmarks/int8.py --untrained imagenet_resnet18:224      # latency + weights at ImageNet size
    python benchmarks/int8.py --untrained resnet20:32 --quick        # a first look in a minute

On a shared or busy machine the figures are indicative only: read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends import open_runner
from deploy.env import environment_record, usable_cores
from deploy.measure import MeasureConfig, interleaved
from deploy.onnx_weights import weight_bytes
from edgedistill.utils.atomic import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
KINDS = ("group", "depthwise", "shift")


def from_run(run: Path, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The four artifacts of ``run``, each network in its best form at each precision: an fp32 export and
    an int8 export by the real pipeline (--lowering auto times the forms quantized in the int8 one), with
    the top-1 export measured on each artifact."""
    from deploy.manifest import load_manifest
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    rows = []
    for precision in ("fp32", "int8"):
        out = work / precision
        export_bundle(run, ExportOptions(out=str(out), precision=precision, calibration_samples=args.calibration_samples,
                                         eval_limit=args.eval_limit, device_eval_samples=0, lowering=args.lowering),
                      report=lambda message: print(f"  {precision}: {message}", flush=True))
        manifest = load_manifest(out)
        for role, entry in manifest["models"].items():
            path = entry["onnx"] if precision == "fp32" else entry["artifacts"]["onnxruntime"]["path"]
            figures = (entry.get("artifact_accuracy") or {}).get(path) or {}
            rows.append({"network": f"{role} ({entry['model']})", "role": role, "precision": precision, "path": out / path,
                         "form": entry["lowering"]["form"], "test_top1": figures.get("test_top1"), "images": figures.get("images"),
                         "weight_bytes": weight_bytes(out / path), "file_bytes": (out / path).stat().st_size})
    return sorted(rows, key=lambda r: (r["role"], r["precision"]))


def trained_per_kind(kinds: list[str], work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One ``--method mutual`` run per cheap kind at the accuracy benchmark's budget (trained, or reused
    when finished), each exported at int8 like ``--run``: four rows per kind."""
    from accuracy import METHODS, RESULTS as RUNS_ROOT, budget_args, train

    rows = []
    for kind in kinds:
        common, tag = budget_args(args.dataset, args.model, kind)
        run = RUNS_ROOT / "runs" / tag / "mutual-seed0"
        print(f"{kind}: training {run} (or reusing it)", flush=True)
        train(run, common + ["--seed", "0"], METHODS["mutual"])
        for row in from_run(run, work / kind, args):
            rows.append({**row, "role": f"{kind} {row['role']}", "network": f"{kind} run: {row['network']}"})
    return rows


def untrained(spec_text: str, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Teacher and every cheap kind of ``ARCH:SIZE``, untrained, fp32 and int8."""
    import torch

    from edgedistill.cheap import CheapSpec
    from edgedistill.export.onnx_export import INPUT_NAME, export_onnx
    from edgedistill.export.quantize import quantize_onnx, recommended_settings
    from edgedistill.export.targets import load_target
    from edgedistill.models import ModelSpec, create_model

    arch, _, size_text = spec_text.partition(":")
    size = int(size_text or 32)
    classes = 1000 if arch.startswith("imagenet") else 10
    settings = recommended_settings(load_target("host"))
    calibration = np.random.default_rng(0).standard_normal((16, 3, size, size)).astype(np.float32)
    rows = []
    for kind in (None, *args.kinds):
        name = "teacher" if kind is None else kind
        torch.manual_seed(0)
        model = create_model(ModelSpec(arch, classes, 3, cheap=CheapSpec(kind) if kind else None)).eval()
        fp32 = work / f"{name}.onnx"
        export_onnx(model, (1, 3, size, size), fp32, opset=18)
        int8 = work / f"{name}.int8.onnx"
        print(f"  quantizing {arch} {name}", flush=True)
        quantize_onnx(fp32, int8, calibration, INPUT_NAME, 1, settings)
        for path, precision in ((fp32, "fp32"), (int8, "int8")):
            rows.append({"network": f"{name} ({arch}, {size}x{size})", "role": name, "precision": precision, "path": path,
                         "form": "trained",
                         "test_top1": None, "images": None, "weight_bytes": weight_bytes(path),
                         "file_bytes": path.stat().st_size})
    return rows


def measure(rows: list[dict[str, Any]], threads: int, config: MeasureConfig) -> None:
    runners = {f"{r['role']} {r['precision']}": open_runner("onnxruntime", r["path"], threads) for r in rows}
    shape = runners_shape(rows[0]["path"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    stats = interleaved({key: (lambda runner=runner: runner.run(x)) for key, runner in runners.items()}, config)
    for row in rows:
        row["latency_ms"] = stats[f"{row['role']} {row['precision']}"].to_dict()


def runners_shape(path: Path) -> tuple[int, ...]:
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value or 1 for d in dims)


def table(rows: list[dict[str, Any]]) -> list[str]:
    fp32 = {r["role"]: r for r in rows if r["precision"] == "fp32"}
    lines = ["| network | precision | form | test top-1 | Δ vs fp32 | median ms | int8/fp32 latency | weights MiB | fp32/int8 weights |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = fp32[r["role"]]
        top1 = "—" if r["test_top1"] is None else f"{100 * r['test_top1']:.2f}% ({r['images']})"
        drop = "—" if r["precision"] == "fp32" or r["test_top1"] is None else \
            f"{100 * (r['test_top1'] - base['test_top1']):+.2f} pt"
        ratio = "—" if r["precision"] == "fp32" else f"{r['latency_ms']['median'] / base['latency_ms']['median']:.2f}×"
        weights = "—" if r["precision"] == "fp32" else f"{base['weight_bytes'] / r['weight_bytes']:.2f}×"
        lines.append(f"| {r['network']} | {r['precision']} | {r['form']} | {top1} | {drop} | {r['latency_ms']['median']:.3f} | {ratio} | "
                     f"{r['weight_bytes'] / 2**20:.2f} | {weights} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a trained run directory with a teacher and a student")
    source.add_argument("--untrained", metavar="ARCH:SIZE", help="untrained teacher + cheap kinds, e.g. imagenet_resnet18:224")
    source.add_argument("--train", nargs="+", metavar="KIND", choices=KINDS,
                        help="one mutual run per kind at the accuracy benchmark's budget (benchmarks/accuracy.py), reused once trained")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset of the --train runs")
    parser.add_argument("--model", default="resnet20", help="architecture of the --train runs")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="cheap kinds (--untrained)")
    parser.add_argument("--threads", type=int, default=min(2, usable_cores()))
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--eval-limit", type=int, default=None, help="test images per artifact (--run; default: the whole split)")
    parser.add_argument("--lowering", default="auto")
    parser.add_argument("--quick", action="store_true", help="short timing (figures are rough)")
    parser.add_argument("--name", help="results file name  [default: int8-<run or arch>]")
    args = parser.parse_args()
    config = MeasureConfig(min_runs=20, min_seconds=0.3, repeats=3) if args.quick else MeasureConfig()
    with tempfile.TemporaryDirectory(prefix="edgedistill-int8-") as tmp:
        if args.train:
            rows = trained_per_kind(args.train, Path(tmp), args)
        else:
            rows = from_run(args.run, Path(tmp), args) if args.run else untrained(args.untrained, Path(tmp), args)
        print(f"timing {len(rows)} models interleaved ({args.threads} threads)", flush=True)
        measure(rows, args.threads, config)
    source = f"{args.dataset}-{args.model}-{'-'.join(args.train)}" if args.train else \
        args.run.name if args.run else args.untrained.replace(":", "-")
    name = args.name or f"int8-{source}"
    lines = table(rows)
    env = environment_record(args.threads)
    note = (f"onnxruntime {env['runtimes'].get('onnxruntime')}, {args.threads} threads, batch 1, on {env['hostname']} "
            f"({env['cpu_model']}); all models interleaved in one run. Indicative where the machine is shared.")
    markdown = "\n".join([f"# int8 vs fp32: {name}", "", *lines, "", note, ""])
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / f"{name}.md", markdown)
    write_json_atomic(RESULTS / f"{name}.json", {"format": "edgedistill-int8-benchmark/1", "environment": env,
                                                 "method": config.to_dict(), "note": note,
                                                 "rows": [{**r, "path": Path(r["path"]).name} for r in rows]})
    print(markdown)
    print(f"written: {RESULTS / name}.{{json,md}}")


if __name__ == "__main__":
    main()
