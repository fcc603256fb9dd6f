#!/usr/bin/env python3
"""Training throughput: one online-distillation step against its networks trained separately.

Measures, in one run and interleaved round by round (so all configurations see
the same machine state), the images/s of an optimiser step of:

  teacher  the standard-conv network alone
  student  one cheap-conv student alone
  mutual   teacher + student in one step (mutual KL)
  od       m cheap students + the online teacher in one step (the paper's OD)

on real Fashion-MNIST batches (augmented on the device, as in training), and
the loader alone. Prints a table and writes JSON (default:
benchmarks/results/train-throughput-<device>.json).

    python benchmarks/train_throughput.py --threads 1          # ResNet-20, 4 shift students, CPU or GPU
    python benchmarks/train_throughput.py --device cuda --amp --channels-last

Every configuration runs in the same memory format: channels-last (NHWC) by
default on CPU, where oneDNN then needs no layout reorders around each conv and
BatchNorm takes its vectorised NHWC path (faster for the teacher and, more so,
for the memory-bound shift students); NCHW by default on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch

from edgedistill.config import TrainConfig
from edgedistill.data import BatchLoader, BatchTransform, load_dataset
from edgedistill.distill.build import build_method, student_spec_for
from edgedistill.distill.runtime import training_runtime
from edgedistill.distill.trainer import Trainer
from edgedistill.training import make_optimizer, make_scheduler
from edgedistill.ui import out_console, table
from edgedistill.utils.atomic import write_json_atomic

CONFIGS = {
    "teacher": {"method": "alone", "network": "teacher"},
    "student": {"method": "alone", "network": "student"},
    "mutual": {"method": "mutual"},
    "od": {"method": "od"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--kind", default="shift")
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC for every configuration (default: on for CPU, off for CUDA)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with training_runtime(args.device, args.amp, False, args.threads) as runtime:
        channels_last = runtime.device.type == "cpu" if args.channels_last is None else args.channels_last
        runtime = dataclasses.replace(runtime, channels_last=channels_last)
        data = load_dataset("fashion-mnist", val_size=0, limit=args.batch_size * (args.steps + 2))
        loader = BatchLoader(data.train, args.batch_size, BatchTransform(data.spec, train=True),
                             shuffle=True, drop_last=True, device=runtime.device)
        batches = [(runtime.to_device(x), y) for x, y in loader]
        trainers = {}
        for name, overrides in CONFIGS.items():
            cfg = TrainConfig(model=args.model, kind=args.kind, students=args.students, **overrides)
            torch.manual_seed(0)
            method = build_method(cfg, student_spec_for(cfg, data.spec.num_classes, data.spec.in_channels))
            method.to(runtime.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
            optimizer = make_optimizer(cfg, method)
            trainers[name] = Trainer(method, method, optimizer, make_scheduler(cfg, optimizer), runtime, None, None)

        def run(trainer: Trainer, steps: int) -> float:
            start = time.perf_counter()
            for x, y in batches[:steps]:
                trainer.step(x, y)
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / steps

        for trainer in trainers.values():  # warm-up: allocator, cuDNN autotuning, first-call costs
            trainer.method.train()
            run(trainer, 2)
        step_times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                step_times[name].append(run(trainer, args.steps))
        start = time.perf_counter()
        for _ in range(args.rounds):
            sum(len(y) for _, y in loader)
        loader_ips = args.rounds * len(loader) * args.batch_size / (time.perf_counter() - start)

    step = {name: statistics.median(times) for name, times in step_times.items()}
    ips = {name: args.batch_size / t for name, t in step.items()}

    def ratio_of(steps: dict[str, float]) -> dict[str, float]:
        return {
            "mutual / teacher-alone (images/s)": steps["teacher"] / steps["mutual"],
            "od / teacher-alone (images/s)": steps["teacher"] / steps["od"],
            "mutual step vs teacher step + student step": (steps["teacher"] + steps["student"]) / steps["mutual"],
            f"od step vs {args.students} student steps": args.students * steps["student"] / steps["od"],
            "student-alone / teacher-alone (images/s)": steps["teacher"] / steps["student"],
        }

    ratios = ratio_of(step)
    # The same ratios within each round (configurations ran back to back): their spread shows the noise.
    round_ratios = [ratio_of({name: times[r] for name, times in step_times.items()}) for r in range(args.rounds)]
    device = str(runtime.device) if runtime.device.type == "cpu" else torch.cuda.get_device_name(runtime.device)
    result = {
        "benchmark": "train-throughput",
        "model": args.model, "kind": args.kind, "students": args.students, "batch_size": args.batch_size,
        "device": device, "threads": torch.get_num_threads(), "amp": runtime.amp, "channels_last": channels_last,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "rounds": args.rounds, "steps_per_round": args.steps,
        "images_per_s": ips, "step_seconds_all_rounds": step_times, "loader_images_per_s": loader_ips,
        "ratios": ratios, "ratios_per_round": round_ratios,
    }
    out = args.out or Path(__file__).parent / "results" / f"train-throughput-{runtime.device.type}.json"
    write_json_atomic(out, result)
    layout = "NHWC" if channels_last else "NCHW"
    out_console.print(table(
        f"training step throughput, {args.model} + {args.kind} students, batch {args.batch_size}, {device}, "
        f"{torch.get_num_threads()} thread(s), {layout}",
        ["configuration", "images/s", "step ms (median)", f"min – max of {args.rounds} rounds"],
        [(name, f"{ips[name]:.0f}", f"{1000 * step[name]:.1f}",
          f"{1000 * min(step_times[name]):.1f} – {1000 * max(step_times[name]):.1f}") for name in trainers]
        + [("loader alone", f"{loader_ips:.0f}", None, None)],
    ))
    out_console.print(table(
        "ratios (same run)", ["ratio", "of medians", "per round, min – max"],
        [(k, f"{v:.2f}", f"{min(r[k] for r in round_ratios):.2f} – {max(r[k] for r in round_ratios):.2f}")
         for k, v in ratios.items()],
    ))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
