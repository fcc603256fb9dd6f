#!/usr/bin/env python3
"""Deploy-side figures on this host: teacher vs group / depthwise / shift students.

For ResNet-20 (3×32×32, CIFAR-size) and an ImageNet ResNet-18 (3×224×224), each
network is exported to ONNX and compiled by TVM for this CPU, untuned and tuned
with a fixed MetaSchedule budget; then the four networks on every backend are
timed interleaved in one run with the project's method (deploy/measure.py), so
speed-ups and TVM-vs-onnxruntime ratios share the machine state, and their
memory is probed in fresh processes. Weights are freshly initialised: latency and memory
do not depend on their values, and no accuracy is claimed here.

Writes benchmarks/results/deploy-host.{json,md} and prints the table.

    python benchmarks/deploy_host.py                              # defaults below: ~16 min on 2 cores the first time (tuning), less once tuned
    python benchmarks/deploy_host.py --tune-trials 0 --quick      # no tuning, short timing
    python benchmarks/deploy_host.py --no-tvm --name deploy-host-lowered   # onnxruntime only, students in their fastest form
    python benchmarks/deploy_host.py --variants shift --tune-trials 256 --tune-imagenet --tvm-lowering fused \
        --skip-untuned --name deploy-host-fused   # the fused shift kernel, tuned, against onnxruntime at both sizes (~40 min the first time)

Each student is exported, per backend, in the form ``edgedistill export`` would ship with that
backend (``--lowering``, default auto: the fastest candidate timed with onnxruntime, or compiled by
TVM at the row's budget; see edgedistill/export/form_choice.py); the table shows the form and the
MACs it really executes beside the architecture's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.backends import open_runner
from deploy.env import environment_record
from deploy.measure import MeasureConfig, interleaved
from deploy.memory import memory_figures
from edgedistill.backends import BuildContext, get_backend
from edgedistill.backends.tvm.compile import compile_onnx
from edgedistill.backends.tvm.form_timing import FUSED, take_timed_library
from edgedistill.cheap import CheapSpec
from edgedistill.export.form_choice import choose_form
from edgedistill.export.onnx_export import INPUT_NAME, export_onnx
from edgedistill.export.pipeline import ExportOptions
from edgedistill.export.targets import load_target
from edgedistill.models import ModelSpec, complexity, create_model
from edgedistill.utils.atomic import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
NETWORKS = {"resnet20": (10, 32), "imagenet_resnet18": (1000, 224)}
VARIANTS = {"teacher": None, "group": CheapSpec("group", groups=4), "depthwise": CheapSpec("depthwise"), "shift": CheapSpec("shift")}


def _context(work: Path, lowering: str, trials: int | None) -> BuildContext:
    """What choose_form sees of an export: onnxruntime's (trials None) or TVM's with ``trials``, on this host."""
    options = ExportOptions(lowering=lowering, tune_trials=trials, tuning_dir=str(work / "tuning"))
    ctx = BuildContext(work, load_target("host"), options, lambda m: print(f"  {m}", flush=True))
    ctx.state["tvm_tuning"] = (trials or 0, None)
    return ctx


def build(work: Path, arch: str, variant: str, trial_budgets: list[int], lowering: str, tvm_lowering: str) -> dict[str, Any]:
    """One network in the form each backend would ship (``lowering``, ``tvm_lowering`` for TVM; auto: the fastest
    measured with that backend, TVM at each budget), exported, and compiled by TVM at each budget."""
    classes, size = NETWORKS[arch]
    spec = ModelSpec(arch, classes, 3, cheap=VARIANTS[variant])
    model = create_model(spec).eval()
    shape = (1, 3, size, size)
    inputs = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    entry: dict[str, Any] = {"arch": arch, "variant": variant, "model": spec.describe(), "shape": shape,
                             **complexity(model, shape).to_dict(), "forms": {}}
    for trials in [None, *trial_budgets]:  # None: onnxruntime
        ctx = _context(work, lowering, None) if trials is None else _context(work, tvm_lowering, trials)
        backend = get_backend("onnxruntime" if trials is None else "tvm")
        choice = choose_form(ctx, backend, f"{arch}/{variant}", model, spec.to_dict(), inputs, reference)
        onnx_path = work / f"{arch}-{variant}-{choice.form}.onnx"
        export_onnx(choice.model, shape, onnx_path, opset=ctx.target.onnx_opset)
        form = {"form": choice.form, "how": choice.how, "candidates_ms": choice.median_ms, "notes": ctx.notes, "onnx": onnx_path,
                "executed_macs": choice.executed_macs(shape)}
        if trials is not None:
            start = time.perf_counter()
            library = work / f"{arch}-{variant}-{choice.form}-t{trials}.so"
            # The library auto compiled to time this form, if it did (else compiled now); none is left in work/.
            artifact = take_timed_library(ctx, f"{arch}/{variant}", choice.form, library) or compile_onnx(
                onnx_path, ctx.target, library, input_name=INPUT_NAME, input_shape=shape, tune_trials=trials,
                tuning_dir=work / "tuning", fuse_shift=choice.form == FUSED,
                progress=lambda m: print(f"  {arch}/{variant}/{trials}: {m}", flush=True))
            form.update(path=artifact.path, seconds=time.perf_counter() - start)
        entry["forms"][trials] = form
    return entry


def measure(entries: list[dict[str, Any]], backends: list[tuple[str, str, int | None]], threads: int,
            config: MeasureConfig, memory: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """Every variant on every backend of one network family, timed interleaved in one run.

    One interleaved run (not one per backend) so that the speed-ups *and* the
    TVM-vs-onnxruntime ratios compare figures taken in the same machine state.
    Keyed by (variant, backend label).
    """
    artifacts = {(e["variant"], label): (backend, e["forms"][trials].get("path") or e["forms"][trials]["onnx"])
                 for label, backend, trials in backends for e in entries}
    x = np.random.default_rng(0).standard_normal(entries[0]["shape"]).astype(np.float32)
    runners = {key: open_runner(backend, path, threads) for key, (backend, path) in artifacts.items()}
    stats = interleaved({" / ".join(key): (lambda r=r: r.run(x)) for key, r in runners.items()}, config)
    del runners
    onnx = {(e["variant"], label): e["forms"][trials]["onnx"] for label, _, trials in backends for e in entries}
    return {
        key: {"latency_ms": stats[" / ".join(key)].to_dict(),
              "memory": memory_figures(backend, path, onnx[key], entries[0]["shape"], threads) if memory else None}
        for key, (backend, path) in artifacts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--tune-trials", type=int, nargs="*", default=[64, 256],
                        help="MetaSchedule budgets for the tuned TVM rows (ResNet-20 only; 0 or none to skip)")
    parser.add_argument("--tune-imagenet", action="store_true", help="also tune the 224×224 networks (long)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="intra-op thread counts; each is a separate interleaved run (e.g. --threads 1 2)")
    parser.add_argument("--quick", action="store_true", help="20 runs / 0.3 s instead of the full method")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "edgedistill" / "deploy-host")
    parser.add_argument("--lowering", default="auto", help="form of the cheap layers (edgedistill export --lowering)")
    parser.add_argument("--no-tvm", action="store_true", help="onnxruntime only (no TVM compile or timing)")
    parser.add_argument("--name", default="deploy-host", help="results file stem in benchmarks/results/")
    parser.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "teacher"],
                        choices=[v for v in VARIANTS if v != "teacher"], help="students to build (the teacher always is)")
    parser.add_argument("--skip-untuned", action="store_true", help="no untuned TVM rows (an untuned 224×224 network takes seconds a run)")
    parser.add_argument("--tvm-lowering", help="form of the cheap layers in the TVM rows (default: --lowering)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    config = MeasureConfig.quick() if args.quick else MeasureConfig()
    budgets = [t for t in args.tune_trials if t > 0]

    rows = []
    for arch in args.networks:
        tuned = budgets if (arch == "resnet20" or args.tune_imagenet) else []
        budgets_here = [] if args.no_tvm else ([] if args.skip_untuned else [0]) + tuned
        entries = [build(args.work, arch, v, budgets_here, args.lowering, args.tvm_lowering or args.lowering)
                   for v in ["teacher", *args.variants]]
        backends = [("onnxruntime", "onnxruntime", None),
                    *[(f"tvm ({'untuned' if t == 0 else f'{t} trials'})", "tvm", t) for t in budgets_here]]
        for threads in args.threads:
            print(f"measuring {arch}: {len(entries)} networks × {', '.join(b[0] for b in backends)}, {threads} threads, "
                  "interleaved", flush=True)
            measured = measure(entries, backends, threads, config, not args.no_memory)
            for label, _, trials in backends:
                teacher = measured[("teacher", label)]["latency_ms"]["median"]
                for e in entries:
                    m, form = measured[(e["variant"], label)], e["forms"][trials]
                    rows.append({
                        "arch": arch, "variant": e["variant"], "model": e["model"], "backend": label, "threads": threads,
                        "params": e["params"], "form": form["form"], "form_how": form["how"],
                        "form_candidates_ms": form["candidates_ms"], "executed_macs": form["executed_macs"], "macs": e["macs"],
                        "macs_ratio": entries[0]["macs"] / e["macs"], "latency_ms": m["latency_ms"],
                        "speedup": teacher / m["latency_ms"]["median"], "memory": m["memory"],
                        "compile_seconds": form.get("seconds"),
                    })
    by_key = {(r["arch"], r["variant"], r["backend"], r["threads"]): r for r in rows}
    for r in rows:
        ort = by_key.get((r["arch"], r["variant"], "onnxruntime", r["threads"]))
        r["vs_onnxruntime"] = r["latency_ms"]["median"] / ort["latency_ms"]["median"] if ort else None
        r["speedup_vs_macs"] = r["speedup"] / r["macs_ratio"] if r["variant"] != "teacher" else None

    result = {"benchmark": "deploy-host", "environment": environment_record(max(args.threads)), "threads": args.threads,
              "method": config.to_dict(),
              "tune_trials": budgets, "lowering": args.lowering, "tvm_lowering": args.tvm_lowering or args.lowering,
              "note": "freshly initialised weights: latency and memory only", "rows": rows}
    write_json_atomic(RESULTS / f"{args.name}.json", result)
    lines = [f"Host: {result['environment']['cpu_model']}, {', '.join(map(str, args.threads))} threads. Batch 1. Median latency "
             "(ms) with p90; speed-up = teacher median / network median on the same backend and threads; 'vs ORT' = latency / "
             "onnxruntime latency.", "",
             "| network | variant | form | MACs | executed MACs | MACs ratio | backend | threads | median ms | p90 ms | cv | speed-up | speed-up / MACs ratio | vs ORT | peak RSS Δ MiB | file MiB |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat, mem = r["latency_ms"], r["memory"] or {}
        rss = "—" if not mem else f"{mem['peak_rss_delta_bytes'] / 2**20:.1f}"
        size = "—" if not mem else f"{mem['file_bytes'] / 2**20:.2f}"
        eff = "—" if r["speedup_vs_macs"] is None else f"{r['speedup_vs_macs']:.2f}"
        lines.append(f"| {r['arch']} | {r['variant']} | {r['form']} | {r['macs'] / 1e6:.1f} M | {r['executed_macs'] / 1e6:.1f} M | "
                     f"{r['macs_ratio']:.1f}× | {r['backend']} | {r['threads']} | "
                     f"{lat['median']:.3f} | {lat['p90']:.3f} | {lat['cv']:.2f} | {r['speedup']:.2f}× | {eff} | "
                     f"{r['vs_onnxruntime']:.2f} | {rss} | {size} |")
    write_text_atomic(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
