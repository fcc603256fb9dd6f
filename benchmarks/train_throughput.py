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

The measuring code is importable (``benchmarks/gpu_check.py`` uses it for its
fp32/AMP × NCHW/NHWC grid): :func:`build_trainers`, :func:`device_batches`,
:func:`time_steps`, :func:`interleaved`, :func:`loader_images_per_s`,
:func:`ratio_of` and :func:`measure` (this script's whole measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edgedistill.config import TrainConfig
from edgedistill.data import BatchLoader, BatchTransform, DataSplits, load_dataset
from edgedistill.distill.build import build_method, student_spec_for
from edgedistill.distill.runtime import Runtime, training_runtime
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

Batch = tuple[torch.Tensor, torch.Tensor]
StepFn = Callable[[torch.Tensor, torch.Tensor], Any]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): time only what has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_batches_data(batch_size: int, steps: int, data_dir: str | Path | None = None) -> DataSplits:
    """Enough Fashion-MNIST training images for ``steps`` (+2) distinct batches, no validation split."""
    return load_dataset("fashion-mnist", data_dir, val_size=0, limit=batch_size * (steps + 2))


def train_loader(data: DataSplits, batch_size: int, device: torch.device) -> BatchLoader:
    """The training loader as ``edgedistill train`` builds it (shuffled, augmented on ``device``)."""
    return BatchLoader(data.train, batch_size, BatchTransform(data.spec, train=True),
                       shuffle=True, drop_last=True, device=device)


def device_batches(loader: BatchLoader, runtime: Runtime) -> list[Batch]:
    """One epoch of ``loader``'s batches, already on the device in ``runtime``'s memory format."""
    return [(runtime.to_device(x), y.to(runtime.device, non_blocking=True)) for x, y in loader]


def build_trainer(
    overrides: Mapping[str, Any], model: str, kind: str, students: int, runtime: Runtime,
    num_classes: int, in_channels: int, seed: int = 0,
) -> Trainer:
    """A :class:`Trainer` of one configuration (``CONFIGS[name]``), its networks on ``runtime``'s device
    and in its memory format; no data of its own (feed it with :meth:`Trainer.step`)."""
    cfg = TrainConfig(model=model, kind=kind, students=students, **overrides)
    torch.manual_seed(seed)
    method = build_method(cfg, student_spec_for(cfg, num_classes, in_channels))
    method.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    method.train()
    optimizer = make_optimizer(cfg, method)
    return Trainer(method, method, optimizer, make_scheduler(cfg, optimizer), runtime, None, None)


def build_trainers(
    model: str, kind: str, students: int, runtime: Runtime, num_classes: int, in_channels: int,
    configs: Mapping[str, Mapping[str, Any]] = CONFIGS,
) -> dict[str, Trainer]:
    return {name: build_trainer(overrides, model, kind, students, runtime, num_classes, in_channels)
            for name, overrides in configs.items()}


def time_steps(step: StepFn, batches: Sequence[Batch], steps: int, device: torch.device) -> float:
    """Seconds per optimiser step over the first ``steps`` batches (the device synchronised at the end)."""
    steps = min(steps, len(batches))
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches[:steps]:
        step(x, y)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def interleaved(
    runs: Mapping[str, tuple[StepFn, Sequence[Batch]]], steps: int, rounds: int, device: torch.device,
    warmup_steps: int = 2, deadline: float | None = None,
) -> dict[str, list[float]]:
    """Seconds per step of every run, round by round: each round times ``steps`` steps of every run back to
    back, so all see the same machine state. A warm-up of ``warmup_steps`` per run comes first (allocator,
    cuDNN autotuning, first-call costs). With a ``deadline`` (``time.monotonic()``), stops after the
    first round that ends past it (at least one round always runs)."""
    for step, batches in runs.values():
        if warmup_steps:
            time_steps(step, batches, warmup_steps, device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, (step, batches) in runs.items():
            times[name].append(time_steps(step, batches, steps, device))
        if deadline is not None and time.monotonic() > deadline and r + 1 < rounds:
            break
    return times


def loader_images_per_s(loader: BatchLoader, rounds: int, device: torch.device) -> float:
    """Images/s of the loader alone (index, copy, augment on the device), the device synchronised."""
    synchronize(device)
    start = time.perf_counter()
    images = 0
    for _ in range(rounds):
        for _, y in loader:
            images += len(y)
    synchronize(device)
    return images / (time.perf_counter() - start)


def ratio_of(steps: Mapping[str, float], students: int) -> dict[str, float]:
    """The throughput ratios between configurations, from their seconds per step."""
    return {
        "mutual / teacher-alone (images/s)": steps["teacher"] / steps["mutual"],
        "od / teacher-alone (images/s)": steps["teacher"] / steps["od"],
        "mutual step vs teacher step + student step": (steps["teacher"] + steps["student"]) / steps["mutual"],
        f"od step vs {students} student steps": students * steps["student"] / steps["od"],
        "student-alone / teacher-alone (images/s)": steps["teacher"] / steps["student"],
    }


def summarize(step_times: Mapping[str, list[float]], batch_size: int, students: int) -> dict[str, Any]:
    """Medians, images/s and ratios (of the medians, and per round to show the noise) of ``step_times``."""
    step = {name: statistics.median(times) for name, times in step_times.items()}
    result: dict[str, Any] = {
        "images_per_s": {name: batch_size / t for name, t in step.items()},
        "step_seconds_median": step,
        "step_seconds_all_rounds": dict(step_times),
    }
    if all(name in step for name in CONFIGS):
        rounds = min(len(t) for t in step_times.values())
        result["ratios"] = ratio_of(step, students)
        # The same ratios within each round (configurations ran back to back): their spread shows the noise.
        result["ratios_per_round"] = [
            ratio_of({name: times[r] for name, times in step_times.items()}, students) for r in range(rounds)
        ]
    return result


def device_name(device: torch.device) -> str:
    return str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)


def measure(
    runtime: Runtime, model: str = "resnet20", kind: str = "shift", students: int = 4, batch_size: int = 128,
    steps: int = 8, rounds: int = 5, data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """This script's measurement in ``runtime`` (device, AMP, memory format): the four configurations
    interleaved, and the loader alone."""
    data = load_batches_data(batch_size, steps, data_dir)
    loader = train_loader(data, batch_size, runtime.device)
    batches = device_batches(loader, runtime)
    trainers = build_trainers(model, kind, students, runtime, data.spec.num_classes, data.spec.in_channels)
    step_times = interleaved({name: (t.step, batches) for name, t in trainers.items()}, steps, rounds, runtime.device)
    loader_ips = loader_images_per_s(loader, rounds, runtime.device)
    return {
        "benchmark": "train-throughput",
        "model": model, "kind": kind, "students": students, "batch_size": batch_size,
        "device": device_name(runtime.device), "threads": torch.get_num_threads(), "amp": runtime.amp,
        "channels_last": runtime.channels_last,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "rounds": rounds, "steps_per_round": steps,
        **summarize(step_times, batch_size, students),
        "loader_images_per_s": loader_ips,
    }


def print_tables(result: Mapping[str, Any]) -> None:
    ips, step, step_times = result["images_per_s"], result["step_seconds_median"], result["step_seconds_all_rounds"]
    rounds = len(next(iter(step_times.values())))
    layout = "NHWC" if result["channels_last"] else "NCHW"
    out_console.print(table(
        f"training step throughput, {result['model']} + {result['kind']} students, batch {result['batch_size']}, "
        f"{result['device']}, {result['threads']} thread(s), {layout}{', AMP' if result['amp'] else ''}",
        ["configuration", "images/s", "step ms (median)", f"min – max of {rounds} rounds"],
        [(name, f"{ips[name]:.0f}", f"{1000 * step[name]:.1f}",
          f"{1000 * min(step_times[name]):.1f} – {1000 * max(step_times[name]):.1f}") for name in ips]
        + [("loader alone", f"{result['loader_images_per_s']:.0f}", None, None)],
    ))
    ratios, round_ratios = result["ratios"], result["ratios_per_round"]
    out_console.print(table(
        "ratios (same run)", ["ratio", "of medians", "per round, min – max"],
        [(k, f"{v:.2f}", f"{min(r[k] for r in round_ratios):.2f} – {max(r[k] for r in round_ratios):.2f}")
         for k, v in ratios.items()],
    ))


def main(argv: Sequence[str] | None = None) -> None:
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
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: the dataset's usual place)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    with training_runtime(args.device, args.amp, False, args.threads) as runtime:
        channels_last = runtime.device.type == "cpu" if args.channels_last is None else args.channels_last
        runtime = dataclasses.replace(runtime, channels_last=channels_last)
        result = measure(runtime, args.model, args.kind, args.students, args.batch_size, args.steps, args.rounds,
                         args.data_dir)
    out = args.out or Path(__file__).parent / "results" / f"train-throughput-{runtime.device.type}.json"
    write_json_atomic(out, result)
    print_tables(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
