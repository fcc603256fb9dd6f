#!/usr/bin/env python3
"""Does online distillation help? Every method, same data, budget and seeds.

Trains, for each seed, with identical data, epochs and schedule:

  teacher   the standard-conv network alone          (--method alone --network teacher)
  student   the cheap student alone                  (--method alone)
  kd        classic KD from that seed's teacher      (--method kd)
  dml       two students, deep mutual learning       (--method dml)
  mutual    teacher + student from scratch           (--method mutual)
  od        m students + online teacher (the paper)  (--method od)

and writes mean ± std test top-1 of the deployed network of each method to
benchmarks/results/accuracy-<dataset>.{json,md}. Runs go through the real CLI
(`edgedistill train --json`), `--jobs` at a time with one thread each.

    python benchmarks/accuracy.py                          # Fashion-MNIST defaults (see --help)
    python benchmarks/accuracy.py --dataset cifar10 --data-dir ~/data --epochs 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgedistill.utils.atomic import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
METHODS = {
    "teacher": ["--method", "alone", "--network", "teacher"],
    "student": ["--method", "alone"],
    "kd": ["--method", "kd"],  # + --teacher-checkpoint of the same seed's teacher run
    "dml": ["--method", "dml"],
    "mutual": ["--method", "mutual"],
    "od": ["--method", "od"],
}


EPOCHS, LIMIT, STUDENTS = 6, 12000, 4
"""The budget of every run (benchmarks/int8.py trains at the same one)."""


def budget_args(dataset: str, model: str, kind: str, epochs: int = EPOCHS, limit: int = LIMIT, students: int = STUDENTS,
                data_dir: str | None = None) -> tuple[list[str], str]:
    """The `edgedistill train` options every method shares, and the runs' directory name."""
    common = ["--dataset", dataset, "--model", model, "--kind", kind, "--epochs", str(epochs), "--students", str(students)]
    common += ["--limit", str(limit)] if limit else []
    common += ["--data-dir", data_dir] if data_dir else []
    return common, f"{dataset}-{model}-{kind}-e{epochs}-n{limit}"


def train(run_dir: Path, common: list[str], extra: list[str]) -> dict:
    summary = run_dir / "summary.json"
    if summary.is_file():  # finished earlier: the benchmark can be re-run to completion
        return json.loads(summary.read_text())
    args = [sys.executable, "-m", "edgedistill.cli", "train", "--json", "--threads", "1", "--out", str(run_dir), *common, *extra]
    if (run_dir / "checkpoints" / "train-state.pt").is_file():
        args.append("--resume")
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"run {run_dir} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def deployed(summary: dict) -> list[dict]:
    """The networks a method produces for deployment: the selected student and/or the teacher."""
    return [n for n in summary["networks"] if n["role"] in ("student", "teacher")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--kind", default="shift")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--limit", type=int, default=LIMIT, help="train/test images per run (0 = all)")
    parser.add_argument("--students", type=int, default=STUDENTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=RESULTS / "runs")
    args = parser.parse_args()

    common, tag = budget_args(args.dataset, args.model, args.kind, args.epochs, args.limit, args.students, args.data_dir)
    run_dir = lambda method, seed: args.runs_dir / tag / f"{method}-seed{seed}"  # noqa: E731

    def run(method: str, seed: int) -> dict:
        extra = METHODS[method]
        if method == "kd":  # classic KD distils from this seed's trained teacher
            teachers[seed].result()
            extra = extra + ["--teacher-checkpoint", str(run_dir("teacher", seed))]
        summary = train(run_dir(method, seed), common + ["--seed", str(seed)], extra)
        print(f"done {method} seed {seed}", file=sys.stderr)
        return summary

    with ThreadPoolExecutor(args.jobs) as pool:
        teachers = {s: pool.submit(run, "teacher", s) for s in args.seeds}
        others = {(m, s): pool.submit(run, m, s) for m in METHODS if m not in ("teacher", "kd") for s in args.seeds}
        kd = {("kd", s): pool.submit(run, "kd", s) for s in args.seeds}
        futures = {**{("teacher", s): f for s, f in teachers.items()}, **others, **kd}
        summaries = {key: future.result() for key, future in futures.items()}
    run_minutes = sum(summary["seconds"] for summary in summaries.values()) / 60  # also right when finished runs are reused

    rows = []
    for method in METHODS:
        per_network: dict[str, list[dict]] = {}
        for seed in args.seeds:
            for net in deployed(summaries[(method, seed)]):
                if method == "kd" and net["role"] == "teacher":
                    continue  # the frozen teacher is the 'teacher' row's network
                per_network.setdefault(net["role"], []).append(net)
        for role, nets in per_network.items():
            test = [100 * n["test_top1"] for n in nets]
            rows.append({
                "method": method, "network": role, "model": nets[0]["model"], "params": nets[0]["params"], "macs": nets[0]["macs"],
                "test_top1_mean": statistics.mean(test), "test_top1_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                "test_top1_per_seed": test, "seconds_per_run": statistics.mean(summaries[(method, s)]["seconds"] for s in args.seeds),
            })
    result = {"benchmark": "accuracy", "settings": vars(args) | {"runs_dir": str(args.runs_dir)}, "run_minutes": run_minutes, "rows": rows}
    write_json_atomic(RESULTS / f"accuracy-{args.dataset}.json", result)
    lines = [
        f"{args.dataset}, {args.model} ({args.kind} students), {args.epochs} epochs on {args.limit or 'all'} training images, "
        f"seeds {args.seeds}; {run_minutes:.0f} min of training in all runs together "
        f"(about {run_minutes / args.jobs:.0f} min wall with {args.jobs} one-thread jobs on this 2-core machine).",
        "",
        "| method | network | model | params | MACs | test top-1 (mean ± std) | s / run |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['network']} | {r['model']} | {r['params'] / 1e3:.1f} k | {r['macs'] / 1e6:.2f} M | "
                     f"{r['test_top1_mean']:.2f} ± {r['test_top1_std']:.2f} | {r['seconds_per_run']:.0f} |")
    write_text_atomic(RESULTS / f"accuracy-{args.dataset}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
