#!/usr/bin/env python3
"""GPU evidence (issue 12): every CUDA path of training, measured and exercised in ONE run.

Device command: one call, run from the repository root, about 7 min, budget <= 8 min (the script
starts no section after --budget-s 420 s and caps each subprocess by the time left; give the call
a timeout of 480 s). Copy the dataset into the checkout first (30 MB; data/ is not git-ignored,
so it travels with the working tree):

    mkdir -p data && cp -rL /usr/share/datasets/fashion-mnist data/      # on the session's machine
    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --data-dir data/fashion-mnist --out $OUT

Needs only torch (CUDA), numpy, click, rich, pyyaml (triton for the compile section); not TVM,
onnxslim, onnxscript, scikit-learn, nor an installed edgedistill: children get the repository on
PYTHONPATH. CPU smoke run (what tests/test_gpu_check.py runs; ~40-50 s on 2 busy cores):

    python benchmarks/gpu_check.py --device cpu --quick --threads 1 --out /tmp/gpu-check

It writes ``gpu-check.json`` (every figure, and for every section ``status`` ok / error /
skipped with the error text or the reason), ``gpu-check.md`` (the same tables) and, under
``real/``, the logs, ``config.yaml``, ``metrics.jsonl`` and ``summary.json`` of the CLI runs.
The JSON is rewritten after every section, so a run cut short still leaves what it measured.

Sections (each independent: a failure is recorded and the next one starts):

  environment       torch / CUDA / cuDNN / NCCL / triton versions, the GPU, optional modules present
  throughput        images/s of an optimiser step of ``teacher``, ``student``, ``mutual`` and ``od``
                    (4 shift students) for ResNet-20 and ResNet-56, batch 128, each in fp32 and AMP
                    (fp16 autocast + GradScaler), NCHW and channels-last: 16 configurations per model
                    interleaved round by round (benchmarks/train_throughput.py's measuring code), and
                    the loader alone. On CPU the AMP variants are skipped with the reason: AMP in
                    edgedistill is CUDA fp16 only (``Runtime.autocast``), the CPU trainer runs fp32.
  shift_share       the shift's share of a shift student's step (forward + backward): torch.profiler
                    self CPU/CUDA time of the ops inside the Shift modules (forward: a record_function
                    range opened by module hooks; backward: autograd's ``_ShiftFunctionBackward`` node),
                    and, as a cross-check, the step with every Shift replaced by the identity
  data_pipeline     does the loader (edgedistill.data.BatchLoader) keep the GPU fed: loader images/s,
                    and the step fed live from the loader against the step on prepared batches
  real_run          ``python -m edgedistill.cli train --device cuda --epochs 1`` on all of Fashion-MNIST
                    (ResNet-20 OD, the CLI's defaults: AMP, channels-last), then a 2-epoch run on
                    --real-limit images SIGKILLed once epoch 1 is saved and epoch 2 is 30% through,
                    and ``--resume``d: it must record epochs [0, 1] and write summary.json
  real_run_torchrun the killed-and-resumed run under ``torchrun --nproc_per_node 1`` (python -m
                    torch.distributed.run; the kill takes the agent and its worker), then, if the
                    budget allows, a 1-epoch run there too
  ddp_nccl          DistributedDataParallel over an NCCL process group (world size 1, subprocess):
                    the Trainer driven through DDP directly, apart from the CLI (real_run_torchrun
                    reaches NCCL + DDP through the CLI: torchrun starts the group even for 1 process)
  compile           torch.compile of the OD step (default and reduce-overhead modes; subprocess with a
                    timeout): compile time, images/s against eager, or the error text
  estimate          wall time of the paper's schedule (ResNet-56, 4 shift students, CIFAR-10's 50,000
                    training images, 300 epochs) on this device, from the measured OD images/s

At the end it prints the tables and the checks of issue 12: teacher AMP + channels-last >= 1.5x
fp32 NCHW images/s; od >= 0.5x teacher-alone images/s; loader images/s against step images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(HERE), str(REPO)):  # train_throughput next to us; edgedistill even when not installed
    if _path not in sys.path:
        sys.path.insert(0 if _path == str(HERE) else len(sys.path), _path)

import torch  # noqa: E402

import train_throughput as tt  # noqa: E402
from edgedistill.distill.runtime import Runtime, training_runtime  # noqa: E402
from edgedistill.distill.trainer import Trainer  # noqa: E402
from edgedistill.utils.atomic import write_text_atomic  # noqa: E402

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
PAPER = {"model": "resnet56", "students": 4, "dataset": "CIFAR-10", "train_images": 50_000, "epochs": 300}
SHIFT_RANGE = "gpu_check::shift.forward"
SHIFT_BACKWARD = "_ShiftFunctionBackward"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    amp: bool
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{'AMP' if self.amp else 'fp32'} {'NHWC' if self.channels_last else 'NCHW'}"


VARIANTS = (
    Variant("fp32-nchw", False, False),
    Variant("fp32-nhwc", False, True),
    Variant("amp-nchw", True, False),
    Variant("amp-nhwc", True, True),
)
CPU_AMP_REASON = ("skipped on CPU: AMP in edgedistill is CUDA fp16 autocast + GradScaler (Runtime.autocast uses "
                  "device_type='cuda'; training_runtime turns amp off elsewhere), so the CPU trainer runs fp32 only")


# -- options -------------------------------------------------------------------------------------

SECTION_NAMES = ("environment", "throughput", "shift_share", "data_pipeline", "real_run", "real_run_torchrun",
                 "ddp_nccl", "compile", "estimate")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu | auto  [default: cuda]")
    p.add_argument("--out", type=Path, help="folder for gpu-check.json, gpu-check.md and real/ (required)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"Fashion-MNIST IDX files [default: {DEFAULT_DATA_DIR}]")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (resnet8, batch 16, 2 steps, 1 round, --limit 320 runs): the CPU smoke test")
    p.add_argument("--budget-s", type=float, default=None, help="start no section after this many seconds "
                   "[default: 420; quick: 300]")
    p.add_argument("--sections", default=",".join(SECTION_NAMES), help="comma-separated subset to run")
    p.add_argument("--models", default=None, help="[default: resnet20,resnet56; quick: resnet8]")
    p.add_argument("--kind", default="shift")
    p.add_argument("--students", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None, help="[default: 128; quick: 16]")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration per round [default: 10; quick: 2]")
    p.add_argument("--rounds", type=int, default=None, help="[default: 5; quick: 1]")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per configuration [default: 3; quick: 1]")
    p.add_argument("--profile-steps", type=int, default=None, help="steps under torch.profiler [default: 3; quick: 2]")
    p.add_argument("--real-model", default=None, help="model of the CLI runs [default: resnet20; quick: resnet8]")
    p.add_argument("--real-batch-size", type=int, default=None, help="[default: 128; quick: 16]")
    p.add_argument("--real-limit", type=int, default=None,
                   help="--limit of the killed-and-resumed runs [default: 12800; quick: 320]")
    p.add_argument("--one-epoch-limit", type=int, default=None,
                   help="--limit of the 1-epoch runs [default: none, all 60,000 images; quick: 320]")
    p.add_argument("--kill-fraction", type=float, default=0.3,
                   help="kill this far into epoch 2, as a fraction of epoch 1's seconds [default: 0.3]")
    p.add_argument("--compile-model", default=None, help="[default: resnet20; quick: resnet8]")
    p.add_argument("--compile-modes", default="default,reduce-overhead", help="torch.compile modes to try (inductor)")
    p.add_argument("--compile-backend", default=None,
                   help="[default: inductor; quick on CPU: eager (dynamo only: inductor takes ~90 s on 2 CPU cores)]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (and --threads of the CLI runs)")
    p.add_argument("--work-dir", type=Path, default=None, help="where the CLI runs' run directories go [default: a temp dir]")
    p.add_argument("--probe", choices=("ddp", "compile"), help=argparse.SUPPRESS)  # internal: subprocess sections
    p.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.out is None and args.probe is None:
        p.error("--out DIR is required")
    quick = args.quick
    defaults = {
        "budget_s": 300.0 if quick else 420.0,
        "models": "resnet8" if quick else "resnet20,resnet56",
        "batch_size": 16 if quick else 128,
        "steps": 2 if quick else 10,
        "rounds": 1 if quick else 5,
        "warmup": 1 if quick else 3,
        "profile_steps": 2 if quick else 3,
        "real_model": "resnet8" if quick else "resnet20",
        "real_batch_size": 16 if quick else 128,
        "real_limit": 320 if quick else 12800,
        "one_epoch_limit": 320 if quick else None,
        "compile_model": "resnet8" if quick else "resnet20",
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.data_dir = str(Path(args.data_dir).expanduser().resolve())  # children run in the repository root
    if args.work_dir is not None:
        args.work_dir = args.work_dir.expanduser().resolve()
    args.models = [m for m in args.models.split(",") if m]
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTION_NAMES))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTION_NAMES)}")
    return args


# -- small helpers -------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def error_text(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " …"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(threads: int | None = None) -> dict[str, str]:
    """The environment of every child: the repository on PYTHONPATH (edgedistill need not be installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> list[int]:
    """Signal the child, its process group, and every process below it: torchrun starts each worker
    in a session of its own, so the group alone would leave the worker running. Returns the pids below."""
    below = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid in below:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return below


def still_running(pids: Sequence[int], wait_s: float = 2.0) -> list[int]:
    """Those of ``pids`` that still run (zombies count as gone) after up to ``wait_s``."""
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + wait_s
    while True:
        left = [pid for pid in pids if running(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        log_file.write(f"$ {shlex.join(cmd)}\n".encode())
        log_file.flush()
        return subprocess.Popen(list(cmd), stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)


def wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        raise TimeoutError(f"killed after {timeout:.0f} s (the time left of the budget)") from None


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def nccl_version() -> str:
    version = torch.cuda.nccl.version()
    return ".".join(str(v) for v in version) if isinstance(version, (tuple, list)) else str(version)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def variant_runtime(base: Runtime, variant: Variant) -> Runtime:
    return dataclasses.replace(base, amp=variant.amp, channels_last=variant.channels_last)


def default_variant(device: torch.device) -> Variant:
    """What ``edgedistill train`` runs by default: AMP and channels-last on CUDA; fp32 channels-last on CPU."""
    return VARIANTS[3] if device.type == "cuda" else VARIANTS[1]


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- the run: sections, budget, output -----------------------------------------------------------

@dataclasses.dataclass
class Check:
    started: float
    args: argparse.Namespace
    base: Runtime
    out: Path
    work: Path
    results: dict[str, Any]
    _data: dict[int | None, Any] = dataclasses.field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.args.budget_s - self.elapsed()

    def sections(self) -> dict[str, Any]:
        return self.results["sections"]

    def fashion(self, limit: int | None):
        """Fashion-MNIST (train only, no validation split) limited to ``limit`` images, loaded once per limit."""
        if limit not in self._data:
            from edgedistill.data import load_dataset

            self._data[limit] = load_dataset("fashion-mnist", self.args.data_dir, val_size=0, limit=limit)
        return self._data[limit]

    def variants(self) -> tuple[list[Variant], dict[str, str]]:
        """The variants that run here, and the skipped ones with their reason."""
        if self.cuda:
            return list(VARIANTS), {}
        return [v for v in VARIANTS if not v.amp], {v.name: CPU_AMP_REASON for v in VARIANTS if v.amp}

    def write(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "gpu-check.json", json.dumps(self.results, indent=2, default=str) + "\n")
        write_text_atomic(self.out / "gpu-check.md", markdown(self.results))


def run_section(check: Check, index: int, name: str, fn: Callable[[Check], dict[str, Any]], need_s: float) -> None:
    total = len(SECTION_NAMES)
    if name not in check.args.sections:
        entry: dict[str, Any] = {"status": "skipped", "reason": "not in --sections"}
    elif check.remaining() < need_s:
        entry = {"status": "skipped",
                 "reason": f"budget: {max(check.remaining(), 0):.0f} s of --budget-s {check.args.budget_s:.0f} left, "
                           f"the section needs about {need_s:.0f} s"}
    else:
        log(f"[{index}/{total}] {name} … ({check.remaining():.0f} s of budget left)")
        start = time.monotonic()
        try:
            entry = fn(check)
            entry.setdefault("status", "ok")
        except Exception as exc:  # every section is independent: record and go on
            entry = {"status": "error", "error": error_text(exc), "traceback": traceback.format_exc()[-4000:]}
        entry["seconds"] = round(time.monotonic() - start, 1)
        free_memory(check.device)
    check.sections()[name] = entry
    detail = entry.get("error") or entry.get("reason") or ""
    log(f"[{index}/{total}] {name}: {entry['status']}" + (f" in {entry['seconds']} s" if "seconds" in entry else "")
        + (f" — {detail[:300]}" if detail else ""))
    check.write()


# -- environment ---------------------------------------------------------------------------------

def section_environment(check: Check) -> dict[str, Any]:
    import importlib.util

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(check.device),
        "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
        "modules": {},
    }
    for name in ("triton", "onnx", "onnxruntime", "onnxscript", "onnxslim", "tvm", "sklearn"):
        try:
            env["modules"][name] = importlib.util.find_spec(name) is not None
        except Exception as exc:  # a broken install
            env["modules"][name] = error_text(exc, 200)
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        env.update({
            "gpu": props.name, "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(), "device_count": torch.cuda.device_count(),
        })
        with contextlib.suppress(Exception):
            env["nccl"] = nccl_version()
    if env["modules"]["triton"] is True:
        with contextlib.suppress(Exception):
            import triton

            env["triton"] = triton.__version__
    return env


# -- throughput ----------------------------------------------------------------------------------

def section_throughput(check: Check) -> dict[str, Any]:
    a = check.args
    data = check.fashion(a.batch_size * (a.steps + 2))
    loader = tt.train_loader(data, a.batch_size, check.device)
    variants, skipped = check.variants()
    cap = time.monotonic() + min(a.budget_s * 0.35, check.remaining() - 5)  # this section's share of the budget
    models: dict[str, Any] = {}
    for i, model in enumerate(a.models):
        deadline = time.monotonic() + (cap - time.monotonic()) / (len(a.models) - i)
        try:
            runs: dict[str, tuple[Any, Any]] = {}
            for v in variants:
                rt = variant_runtime(check.base, v)
                batches = tt.device_batches(loader, rt)
                trainers = tt.build_trainers(model, a.kind, a.students, rt, data.spec.num_classes, data.spec.in_channels)
                runs.update({f"{v.name}/{name}": (t.step, batches) for name, t in trainers.items()})
            if check.cuda:
                torch.cuda.reset_peak_memory_stats(check.device)
            times = tt.interleaved(runs, a.steps, a.rounds, check.device, a.warmup, deadline=deadline)
            entry: dict[str, Any] = {"variants": {}, "rounds_done": len(next(iter(times.values())))}
            for v in variants:
                own = {name: times[f"{v.name}/{name}"] for name in tt.CONFIGS}
                entry["variants"][v.name] = {"status": "ok", "label": v.label,
                                             **tt.summarize(own, a.batch_size, a.students)}
            for name, reason in skipped.items():
                entry["variants"][name] = {"status": "skipped", "reason": reason}
            if check.cuda:
                entry["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(check.device) / 2**20)
            models[model] = entry
        except Exception as exc:
            models[model] = {"status": "error", "error": error_text(exc), "traceback": traceback.format_exc()[-3000:]}
        finally:
            runs, trainers = {}, {}
            free_memory(check.device)
    loader_ips = tt.loader_images_per_s(loader, max(a.rounds, 2), check.device)
    result: dict[str, Any] = {
        "batch_size": a.batch_size, "kind": a.kind, "students": a.students, "steps_per_round": a.steps,
        "rounds": a.rounds, "warmup_steps": a.warmup, "device": tt.device_name(check.device),
        "threads": torch.get_num_threads(), "models": models, "loader_images_per_s": loader_ips,
        "amp": "CUDA fp16 autocast + GradScaler" if check.cuda else CPU_AMP_REASON,
        "note": "Fashion-MNIST batches (1 input channel; CIFAR's 3 only change the stem conv), augmented on the device",
    }
    failed = [m for m, e in models.items() if e.get("status") == "error"]
    if failed:
        result.update(status="error", error="; ".join(f"{m}: {models[m]['error']}" for m in failed))
    return result


# -- shift share ---------------------------------------------------------------------------------

def _shift_modules(method: torch.nn.Module) -> list[torch.nn.Module]:
    from edgedistill.cheap.modules import Shift

    return [m for m in method.modules() if isinstance(m, Shift)]


@contextlib.contextmanager
def annotated_shifts(method: torch.nn.Module) -> Iterator[int]:
    """Open a profiler range around every Shift module's forward (its backward is autograd's
    ``_ShiftFunctionBackward`` node, which the profiler names by itself)."""
    from torch.autograd.profiler import record_function

    stack: list[Any] = []

    def enter(module: torch.nn.Module, inputs: Any) -> None:
        rf = record_function(SHIFT_RANGE)
        rf.__enter__()
        stack.append(rf)

    def leave(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if stack:
            stack.pop().__exit__(None, None, None)

    modules = _shift_modules(method)
    handles = [h for m in modules for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        yield len(modules)
    finally:
        for h in handles:
            h.remove()


def _is_shift_root(name: str) -> bool:
    return name == SHIFT_RANGE or SHIFT_BACKWARD in name


def _self_device_us(event: Any) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        with contextlib.suppress(Exception):
            value = getattr(event, attr)
            if value is not None:
                return float(value)
    return 0.0


def shift_profile(events: Any, steps: int, wall_s: float, step_s: float | None = None) -> dict[str, Any]:
    """Per-step self CPU and device time of the ops inside shift scopes, and of all ops (CPU-side events
    only: a kernel is counted once, on the op that launched it). ``step_s``: the step's time unprofiled."""
    from torch.autograd import DeviceType

    def inside(event: Any) -> bool:
        while event is not None:
            if _is_shift_root(event.name):
                return True
            event = event.cpu_parent
        return False

    cpu_events = [e for e in events if getattr(e, "device_type", DeviceType.CPU) == DeviceType.CPU]
    device_events = [e for e in events if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU]
    shift = [e for e in cpu_events if inside(e)]
    per_step = lambda us: us / steps  # noqa: E731
    shift_cpu = per_step(sum(e.self_cpu_time_total for e in shift))
    all_cpu = per_step(sum(e.self_cpu_time_total for e in cpu_events))
    shift_dev = per_step(sum(_self_device_us(e) for e in shift))
    all_dev = per_step(sum(_self_device_us(e) for e in cpu_events))
    result = {
        "profiled_steps": steps,
        "step_wall_us_under_profiler": 1e6 * wall_s / steps,
        "shift_self_cpu_us_per_step": shift_cpu, "all_ops_self_cpu_us_per_step": all_cpu,
        "shift_share_of_op_cpu_time": shift_cpu / all_cpu if all_cpu else None,
        "shift_forward_ranges_per_step": sum(e.name == SHIFT_RANGE for e in events) / steps,
        "shift_backward_nodes_per_step": sum(e.name == SHIFT_BACKWARD for e in events) / steps,
    }
    if all_dev:
        result.update({
            "shift_self_device_us_per_step": shift_dev, "all_ops_self_device_us_per_step": all_dev,
            "shift_share_of_kernel_time": shift_dev / all_dev,
            # how busy the GPU is: kernel time over the (unprofiled) step time; well below 1 = launch-bound
            "kernel_time_share_of_wall": all_dev / (1e6 * (step_s or wall_s / steps)),
            "device_events_us_per_step": per_step(sum(float(e.device_time_total) for e in device_events)),
        })
    return result


def section_shift_share(check: Check) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    a = check.args
    data = check.fashion(a.batch_size * (a.steps + 2))
    loader = tt.train_loader(data, a.batch_size, check.device)
    wanted = (VARIANTS[0], VARIANTS[3]) if check.cuda else (VARIANTS[0], VARIANTS[1])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if check.cuda else [])
    results: dict[str, Any] = {}
    for model in a.models:
        for v in wanted:
            key = f"{model}/{v.name}"
            try:
                rt = variant_runtime(check.base, v)
                batches = tt.device_batches(loader, rt)
                shifted = tt.build_trainer(tt.CONFIGS["student"], model, a.kind, a.students, rt,
                                           data.spec.num_classes, data.spec.in_channels)
                plain = tt.build_trainer(tt.CONFIGS["student"], model, a.kind, a.students, rt,
                                         data.spec.num_classes, data.spec.in_channels)
                modules = _shift_modules(plain.method)
                for m in modules:
                    m.forward = lambda x: x  # the ablation: same network, every shift an identity
                times = tt.interleaved({"shift": (shifted.step, batches), "identity": (plain.step, batches)},
                                       a.steps, a.rounds, check.device, a.warmup)
                t_shift, t_identity = median(times["shift"]), median(times["identity"])
                entry: dict[str, Any] = {
                    "model": model, "variant": v.label, "shift_modules": len(modules),
                    "step_ms": 1000 * t_shift, "step_ms_shift_as_identity": 1000 * t_identity,
                    "shift_share_by_ablation": 1 - t_identity / t_shift,
                }
                results[key] = entry
                try:  # a profiler failure keeps the ablation figures
                    with annotated_shifts(shifted.method):
                        tt.synchronize(check.device)
                        with profile(activities=activities) as prof:
                            start = time.perf_counter()
                            for x, y in batches[: a.profile_steps]:
                                shifted.step(x, y)
                            tt.synchronize(check.device)
                            wall = time.perf_counter() - start
                    entry.update(shift_profile(prof.events(), min(a.profile_steps, len(batches)), wall, t_shift))
                except Exception as exc:
                    entry["profiler_error"] = error_text(exc)
            except Exception as exc:
                results[key] = {"status": "error", "error": error_text(exc), "traceback": traceback.format_exc()[-3000:]}
            free_memory(check.device)
    out: dict[str, Any] = {
        "what": "a shift student alone (method alone, network student), forward + backward + SGD step",
        "method": "torch.profiler self time of ops inside Shift forward ranges (module hooks) and "
                  "_ShiftFunctionBackward nodes; cross-check: the step with every Shift an identity",
        "runs": results,
    }
    if not check.cuda:
        out["note"] = f"fp32 only; AMP {CPU_AMP_REASON}"
    failed = {k: e.get("error") or f"profiler: {e['profiler_error']}" for k, e in results.items()
              if e.get("status") == "error" or "profiler_error" in e}
    if failed:
        out.update(status="error", error="; ".join(f"{k}: {why}" for k, why in failed.items()))
    return out


# -- data pipeline -------------------------------------------------------------------------------

def time_live(trainer: Trainer, loader: Any, runtime: Runtime, steps: int, epoch: int) -> float:
    """Seconds per step fed straight from the loader, as ``Trainer.train_epoch`` does."""
    loader.set_epoch(epoch)
    tt.synchronize(runtime.device)
    start = time.perf_counter()
    done = 0
    for x, y in loader:
        trainer.step(runtime.to_device(x), y.to(runtime.device, non_blocking=True))
        done += 1
        if done == steps:
            break
    tt.synchronize(runtime.device)
    return (time.perf_counter() - start) / done


def section_data_pipeline(check: Check) -> dict[str, Any]:
    a = check.args
    model = a.models[0]
    v = default_variant(check.device)
    rt = variant_runtime(check.base, v)
    data = check.fashion(a.batch_size * (a.steps + 2))
    loader = tt.train_loader(data, a.batch_size, check.device)
    batches = tt.device_batches(loader, rt)
    trainers = {name: tt.build_trainer(tt.CONFIGS[name], model, a.kind, a.students, rt,
                                       data.spec.num_classes, data.spec.in_channels) for name in ("teacher", "od")}
    for t in trainers.values():  # warm-up
        tt.time_steps(t.step, batches, a.warmup, check.device)
        time_live(t, loader, rt, a.warmup, 0)
    prepared: dict[str, list[float]] = {n: [] for n in trainers}
    live: dict[str, list[float]] = {n: [] for n in trainers}
    for r in range(a.rounds):
        for name, t in trainers.items():
            prepared[name].append(tt.time_steps(t.step, batches, a.steps, check.device))
            live[name].append(time_live(t, loader, rt, a.steps, r + 1))
    loader_ips = tt.loader_images_per_s(loader, max(a.rounds, 2), check.device)
    configs = {}
    for name in trainers:
        step_ips = a.batch_size / median(prepared[name])
        live_ips = a.batch_size / median(live[name])
        configs[name] = {
            "step_images_per_s_prepared_batches": step_ips, "step_images_per_s_fed_by_loader": live_ips,
            "fed_by_loader / prepared": live_ips / step_ips, "loader / step (images/s)": loader_ips / step_ips,
            "loader_keeps_up": live_ips >= 0.95 * step_ips,
        }
    return {
        "model": model, "variant": v.label, "batch_size": a.batch_size,
        "dataset_on_device": str(loader._images.device),  # BatchLoader copies the dataset to the GPU when it fits
        "loader_images_per_s": loader_ips, "configs": configs,
        "gpu_waits_for_data": any(not c["loader_keeps_up"] for c in configs.values()),
        "how": "step on prepared device batches vs the same step fed live from BatchLoader (index, copy, augment); "
               "'loader_keeps_up' means the live step keeps >= 95% of the prepared step's images/s",
    }


# -- the real CLI runs ---------------------------------------------------------------------------

def _cli(launcher: str) -> list[str]:
    if launcher == "single":
        return [sys.executable, "-m", "edgedistill.cli"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
            "--master_port", str(free_port()), "-m", "edgedistill.cli"]


def _train_args(check: Check, run_dir: Path, epochs: int, limit: int | None) -> list[str]:
    a = check.args
    args = ["train", "--quiet", "--device", check.device.type,
            "--dataset", "fashion-mnist", "--data-dir", a.data_dir,
            "--model", a.real_model, "--kind", a.kind, "--students", str(a.students),
            "--batch-size", str(a.real_batch_size), "--epochs", str(epochs), "--out", str(run_dir)]
    if limit:
        args += ["--limit", str(limit)]
    if a.threads:
        args += ["--threads", str(a.threads)]
    return args


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    return {
        "epochs": s["epochs"], "seconds": s["seconds"], "images_per_s": s["images_per_s"], "device": s["device"],
        "selected_student": s["selected_student"],
        "test_top1": {n["name"]: n["test_top1"] for n in s["networks"]},
    }


def _keep_evidence(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)


def _run_to_end(check: Check, cmd: list[str], log_path: Path, reserve: float = 10) -> dict[str, Any]:
    start = time.monotonic()
    proc = spawn(cmd, log_path, subprocess_env(check.args.threads))
    rc = wait(proc, check.remaining() - reserve)
    return {"command": shlex.join(cmd), "rc": rc, "wall_s": round(time.monotonic() - start, 1)}


def one_epoch_run(check: Check, launcher: str, limit: int | None) -> dict[str, Any]:
    name = f"{launcher}-1epoch"
    run_dir = check.work / name
    cmd = _cli(launcher) + _train_args(check, run_dir, 1, limit)
    log_path = check.out / "real" / f"{name}.log"
    rec: dict[str, Any] = {"log": str(log_path.relative_to(check.out))}
    try:
        rec.update(_run_to_end(check, cmd, log_path))
        records = _metrics(run_dir)
        rec.update({"summary": _summary(run_dir), "epoch_images_per_s": [r["images_per_s"] for r in records],
                    "epoch_seconds": [r["seconds"] for r in records]})
        rec["ok"] = rec["rc"] == 0 and rec["summary"] is not None and len(records) == 1
        if not rec["ok"]:
            rec["error"] = f"rc {rec['rc']}, summary.json {'present' if rec['summary'] else 'missing'}, " \
                           f"{len(records)} epoch record(s); log tail: {tail(log_path)}"
    except Exception as exc:
        rec.update(ok=False, error=error_text(exc), log_tail=tail(log_path))
    _keep_evidence(run_dir, check.out / "real" / name)
    return rec


def kill_resume_run(check: Check, launcher: str) -> dict[str, Any]:
    """``--epochs 2``: SIGKILL (the whole process group) once epoch 1 is saved and epoch 2 is under way,
    then ``--resume`` (under the same launcher): it must redo epoch 2 only and write summary.json."""
    name = f"{launcher}-kill-resume"
    run_dir = check.work / name
    log_path = check.out / "real" / f"{name}.log"
    rec: dict[str, Any] = {"log": str(log_path.relative_to(check.out))}
    try:
        cmd = _cli(launcher) + _train_args(check, run_dir, 2, check.args.real_limit)
        start = time.monotonic()
        proc = spawn(cmd, log_path, subprocess_env(check.args.threads))
        first: dict[str, Any] = {"command": shlex.join(cmd)}
        rec["first"] = first
        deadline = time.monotonic() + check.remaining() - 20
        while proc.poll() is None and not _metrics(run_dir):
            if time.monotonic() > deadline:
                kill_group(proc)
                proc.wait()
                raise TimeoutError("epoch 1 did not finish within the budget")
            time.sleep(0.02)
        records = _metrics(run_dir)
        if not records:
            raise RuntimeError(f"the run ended (rc {proc.returncode}) before epoch 1 was recorded; log: {tail(log_path)}")
        epoch1 = float(records[0]["seconds"])
        first["epoch1_seconds"] = epoch1
        first["epoch1_recorded_after_s"] = round(time.monotonic() - start, 2)
        time.sleep(check.args.kill_fraction * epoch1)
        first["alive_at_kill"] = proc.poll() is None
        first["killed_after_s"] = round(time.monotonic() - start, 2)
        below = kill_group(proc, signal.SIGKILL)
        first["rc"] = proc.wait()
        first["processes_killed"] = 1 + len(below)
        first["processes_left_running"] = still_running(below)
        first["epochs_recorded_at_kill"] = [r["epoch"] for r in _metrics(run_dir)]
        first["summary_written"] = (run_dir / "summary.json").is_file()
        first["train_state_saved"] = (run_dir / "checkpoints" / "train-state.pt").is_file()
        rec["killed_mid_epoch_2"] = (first["alive_at_kill"] and first["epochs_recorded_at_kill"] == [0]
                                     and not first["summary_written"] and not first["processes_left_running"])
        resume_cmd = _cli(launcher) + ["train", "--quiet", "--resume", "--out", str(run_dir)]
        resumed = _run_to_end(check, resume_cmd, log_path)
        records = _metrics(run_dir)
        resumed.update({"summary": _summary(run_dir), "epochs_recorded": [r["epoch"] for r in records],
                        "epoch_images_per_s": [r["images_per_s"] for r in records]})
        rec["resume"] = resumed
        rec["ok"] = (rec["killed_mid_epoch_2"] and resumed["rc"] == 0 and resumed["summary"] is not None
                     and resumed["summary"]["epochs"] == 2 and resumed["epochs_recorded"] == [0, 1])
        if not rec["ok"]:
            rec["error"] = (f"killed mid epoch 2: {rec['killed_mid_epoch_2']} (alive {first['alive_at_kill']}, "
                            f"epochs at kill {first['epochs_recorded_at_kill']}); resume rc {resumed['rc']}, "
                            f"epochs {resumed['epochs_recorded']}, summary.json "
                            f"{'present' if resumed['summary'] else 'missing'}; log tail: {tail(log_path, 800)}")
    except Exception as exc:
        rec.update(ok=False, error=error_text(exc), log_tail=tail(log_path))
    _keep_evidence(run_dir, check.out / "real" / name)
    return rec


def real_runs(check: Check, launcher: str) -> dict[str, Any]:
    """single: the 1-epoch run (all of Fashion-MNIST on CUDA), then kill + resume. torchrun: kill + resume
    (a complete run under torchrun), then the 1-epoch run on --real-limit images only if the budget allows."""
    a = check.args
    result: dict[str, Any] = {
        "launcher": "python -m edgedistill.cli" if launcher == "single"
        else "python -m torch.distributed.run --nproc_per_node 1 (torchrun) -m edgedistill.cli",
        "model": a.real_model, "batch_size": a.real_batch_size, "kill_resume_limit": a.real_limit,
    }
    if launcher == "single":
        result["one_epoch_limit"] = a.one_epoch_limit
        result["one_epoch"] = one_epoch_run(check, launcher, a.one_epoch_limit)
    if check.remaining() > 30:
        result["kill_resume"] = kill_resume_run(check, launcher)
    else:
        result["kill_resume"] = {"ok": False, "status": "skipped", "reason": f"budget: {check.remaining():.0f} s left"}
    if launcher == "torchrun":
        if not a.quick and check.remaining() > 150:
            result["one_epoch_limit"] = a.real_limit
            result["one_epoch"] = one_epoch_run(check, launcher, a.real_limit)
        else:
            result["one_epoch"] = {"status": "skipped", "reason": (
                "--quick" if a.quick else f"budget: {check.remaining():.0f} s left, kept for the later sections")
                + "; the killed-and-resumed run above is a complete run under torchrun"}
        result["note"] = ("torchrun with one process: training_runtime starts the process group (NCCL on CUDA) because "
                          "torchrun set TORCHELASTIC_RUN_ID, so the CLI trains through DDP as with more processes")
    problems = [f"{k}: {v['error']}" for k, v in result.items() if isinstance(v, dict) and v.get("error")]
    if problems:
        result.update(status="error", error="; ".join(problems)[:3000])
    return result


# -- subprocess probes: DDP over NCCL, torch.compile ---------------------------------------------

def run_probe(check: Check, probe: str, extra: list[str], cap_s: float) -> dict[str, Any]:
    """Run ``--probe PROBE`` of this script in a child (a hang or crash cannot take the run down);
    return what it wrote, even when it was killed part-way."""
    a = check.args
    probe_out = check.work / f"probe-{probe}.json"
    log_path = check.out / f"probe-{probe}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", probe, "--probe-out", str(probe_out),
           "--device", str(check.device), "--data-dir", a.data_dir, "--kind", a.kind, "--students", str(a.students),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--rounds", str(a.rounds),
           "--warmup", str(a.warmup), *extra]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    timeout = min(cap_s, check.remaining() - 5)
    result: dict[str, Any] = {"command": shlex.join(cmd), "log": log_path.name, "timeout_s": round(timeout)}
    proc = spawn(cmd, log_path, subprocess_env(a.threads))
    failure = None
    try:
        result["rc"] = wait(proc, timeout)
        if result["rc"] != 0:
            failure = f"probe exited with {result['rc']}"
    except TimeoutError as exc:
        failure = f"probe {exc}"
    if probe_out.is_file():  # what the probe wrote, even part-way
        with contextlib.suppress(ValueError):
            result.update({k: v for k, v in json.loads(probe_out.read_text()).items() if k not in result})
    if failure:
        own = result.get("error")
        result.update(status="error", error=f"{failure}" + (f" ({own})" if own and own != "did not finish" else "")
                      + f"; log tail: {tail(log_path, 1000)}")
    result["log_tail"] = tail(log_path, 1200)
    return result


def probe_ddp(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    result: dict[str, Any] = {"status": "error", "error": "did not finish"}

    def save() -> None:
        write_text_atomic(args.probe_out, json.dumps(result, indent=2, default=str))

    save()
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"})
    with training_runtime(args.device, False, False, args.threads) as base:
        cuda = base.device.type == "cuda"
        backend = "nccl" if cuda else "gloo"
        start = time.monotonic()
        dist.init_process_group(backend, rank=0, world_size=1, timeout=dt.timedelta(seconds=120))
        try:
            result.update({"backend": dist.get_backend(), "init_s": round(time.monotonic() - start, 2),
                           "world_size": dist.get_world_size()})
            probe = torch.ones(4, device=base.device)
            dist.all_reduce(probe)
            tt.synchronize(base.device)
            result["all_reduce_ok"] = bool(torch.all(probe == 1).item())
            v = default_variant(base.device)
            rt = variant_runtime(base, v)
            data = tt.load_batches_data(args.batch_size, args.steps, args.data_dir)
            loader = tt.train_loader(data, args.batch_size, base.device)
            batches = tt.device_batches(loader, rt)
            model = args.models[0]
            plain = tt.build_trainer(tt.CONFIGS["od"], model, args.kind, args.students, rt,
                                     data.spec.num_classes, data.spec.in_channels)
            wrapped = tt.build_trainer(tt.CONFIGS["od"], model, args.kind, args.students, rt,
                                       data.spec.num_classes, data.spec.in_channels)
            ids = [base.device.index] if cuda else None
            wrapped.model = DistributedDataParallel(wrapped.method, device_ids=ids)  # as TrainingSession does
            times = tt.interleaved({"plain": (plain.step, batches), "ddp": (wrapped.step, batches)},
                                   args.steps, args.rounds, base.device, args.warmup)
            # Same initial weights, same batches, same number of steps: DDP over one rank must not change them
            # beyond kernel non-determinism (cuDNN autotuning may pick other algorithms for the two copies).
            diff = max((p - q).abs().max().item() for p, q in zip(plain.method.parameters(), wrapped.method.parameters()))
            loss, _, _ = wrapped.step(*batches[0])
            result.update({
                "status": "ok", "error": None, "model": model, "method": "od", "variant": v.label,
                "images_per_s_plain": args.batch_size / median(times["plain"]),
                "images_per_s_ddp": args.batch_size / median(times["ddp"]),
                "ddp_overhead": median(times["ddp"]) / median(times["plain"]) - 1,
                "loss_finite": math.isfinite(float(loss)),
                "max_weight_difference_plain_vs_ddp_after_same_steps": diff,
                "grad_scaler_enabled": wrapped.scaler.is_enabled(),
                "note": "world size 1 (one GPU; NCCL refuses two ranks on one GPU): exercises DDP's reducer and NCCL "
                        "collectives through edgedistill's Trainer, not multi-GPU scaling",
            })
            if cuda:
                with contextlib.suppress(Exception):
                    result["nccl"] = nccl_version()
        finally:
            dist.destroy_process_group()
    save()


def probe_compile(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"status": "error", "error": "did not finish", "modes": {}}

    def save() -> None:
        write_text_atomic(args.probe_out, json.dumps(result, indent=2, default=str))

    save()
    with training_runtime(args.device, False, False, args.threads) as base:
        v = default_variant(base.device)
        rt = variant_runtime(base, v)
        model = args.compile_model
        backend = args.compile_backend
        data = tt.load_batches_data(args.batch_size, args.steps, args.data_dir)
        loader = tt.train_loader(data, args.batch_size, base.device)
        batches = tt.device_batches(loader, rt)
        build = lambda: tt.build_trainer(tt.CONFIGS["od"], model, args.kind, args.students, rt,  # noqa: E731
                                         data.spec.num_classes, data.spec.in_channels)
        eager = build()
        eager_times = tt.interleaved({"eager": (eager.step, batches)}, args.steps, args.rounds, base.device, args.warmup)
        eager_ips = args.batch_size / median(eager_times["eager"])
        result.update({"status": "ok", "error": None, "model": model, "method": "od", "variant": v.label,
                       "backend": backend, "torch": torch.__version__, "eager_images_per_s": eager_ips,
                       "what": "torch.compile(method): the forward of all networks (and its backward through "
                               "AOTAutograd); loss, GradScaler and SGD stay eager, as in Trainer.step"})
        save()
        modes = [m for m in args.compile_modes.split(",") if m] if backend == "inductor" else [None]
        for mode in modes:
            label = mode or f"backend={backend}"
            entry: dict[str, Any] = {}
            result["modes"][label] = entry
            try:
                import torch._dynamo as dynamo

                dynamo.reset()
                dynamo.utils.counters.clear()
                trainer = build()
                trainer.model = torch.compile(trainer.method, backend=backend, **({"mode": mode} if mode else {}))
                mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
                if mode == "reduce-overhead" and mark is not None:
                    def step(x: torch.Tensor, y: torch.Tensor, trainer: Trainer = trainer) -> Any:
                        mark()
                        return trainer.step(x, y)
                else:
                    step = trainer.step
                start = time.perf_counter()
                step(*batches[0])
                tt.synchronize(base.device)
                entry["first_step_s"] = round(time.perf_counter() - start, 2)
                times = tt.interleaved({"eager": (eager.step, batches), "compiled": (step, batches)},
                                       args.steps, args.rounds, base.device, max(args.warmup, 2))
                entry.update({
                    "status": "ok",
                    "images_per_s": args.batch_size / median(times["compiled"]),
                    "eager_images_per_s_same_rounds": args.batch_size / median(times["eager"]),
                    "speedup": median(times["eager"]) / median(times["compiled"]),
                })
                breaks = dynamo.utils.counters.get("graph_break", {})
                entry["graph_breaks"] = sum(breaks.values())
                entry["graph_break_reasons"] = [str(k)[:200] for k in list(breaks)[:5]]
            except Exception as exc:
                entry.update(status="error", error=error_text(exc, 3000))
            save()
        if all(e.get("status") == "error" for e in result["modes"].values()):
            result.update(status="error", error="; ".join(f"{k}: {e['error'][:500]}" for k, e in result["modes"].items()))
    save()


def section_ddp_nccl(check: Check) -> dict[str, Any]:
    extra = ["--models", check.args.models[0]]
    return run_probe(check, "ddp", extra, cap_s=120)


def section_compile(check: Check) -> dict[str, Any]:
    a = check.args
    backend = a.compile_backend or ("eager" if a.quick and not check.cuda else "inductor")
    extra = ["--compile-model", a.compile_model, "--compile-modes", a.compile_modes, "--compile-backend", backend]
    result = run_probe(check, "compile", extra, cap_s=check.remaining() - 5)
    if backend != "inductor":
        result["note"] = (f"backend {backend}: --quick on CPU traces with dynamo only (inductor takes ~90 s for "
                          "resnet8 OD on 2 CPU cores); the GPU run uses inductor")
    return result


# -- the estimate and the checks -----------------------------------------------------------------

def _ok(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("status", "ok") == "ok"


def section_estimate(check: Check) -> dict[str, Any]:
    tp = check.sections().get("throughput", {})
    models = {m: e for m, e in tp.get("models", {}).items() if _ok(e)}
    if not models:
        return {"status": "skipped", "reason": "no throughput figures to estimate from"}
    model = PAPER["model"] if PAPER["model"] in models else next(iter(models))
    images = PAPER["train_images"] * PAPER["epochs"]
    variants = {}
    for name, v in models[model]["variants"].items():
        if _ok(v):
            ips = v["images_per_s"]["od"]
            variants[name] = {"od_images_per_s": ips, "hours": images / ips / 3600}
    best = max(variants, key=lambda n: variants[n]["od_images_per_s"])
    result: dict[str, Any] = {
        "schedule": PAPER, "model_measured": model, "device": tp.get("device"), "variants": variants,
        "best_variant": best, "hours_best": variants[best]["hours"],
        "what": f"{PAPER['epochs']} epochs x {PAPER['train_images']:,} images / OD step images/s (training steps only; "
                "per-epoch evaluation, checkpoints and start-up come on top, see real_run for their share)",
    }
    if model != PAPER["model"]:
        result["note"] = f"{PAPER['model']} was not measured in this run: the estimate uses {model}"
    comp = check.sections().get("compile", {})
    if _ok(comp) and comp.get("backend") == "inductor":
        speedups = {k: e["speedup"] for k, e in comp.get("modes", {}).items() if _ok(e) and "speedup" in e}
        if speedups:
            mode = max(speedups, key=speedups.get)
            result["hours_compiled"] = {
                "mode": mode, "speedup": speedups[mode], "measured_on": comp.get("model"),
                "hours": variants[best]["hours"] / speedups[mode],
                **({} if comp.get("model") == model else
                   {"note": f"assumes {comp.get('model')}'s compile speed-up ({comp.get('variant')}) carries over to {model}"}),
            }
    real = check.sections().get("real_run", {}).get("one_epoch", {})
    if real.get("ok") and real.get("epoch_seconds") and real.get("summary"):
        # summary.seconds = the epoch loop (train + validation + checkpoints) + the final test pass
        result["real_run_train_share"] = real["epoch_seconds"][0] / real["summary"]["seconds"]
    return result


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's figures: each with its value, target and verdict (or why it could not be computed)."""
    out: list[dict[str, Any]] = []
    sections = results["sections"]
    tp = sections.get("throughput", {})
    for model, entry in tp.get("models", {}).items():
        if not _ok(entry):
            out.append({"check": f"{model}: throughput", "value": None, "target": None, "pass": None,
                        "note": entry.get("error")})
            continue
        vs = entry["variants"]
        base, fast = vs.get("fp32-nchw", {}), vs.get("amp-nhwc", {})
        if _ok(base) and _ok(fast):
            value = fast["images_per_s"]["teacher"] / base["images_per_s"]["teacher"]
            out.append({"check": f"{model}: teacher AMP+NHWC / fp32 NCHW images/s", "value": value, "target": ">= 1.5",
                        "pass": value >= 1.5})
        else:
            out.append({"check": f"{model}: teacher AMP+NHWC / fp32 NCHW images/s", "value": None, "target": ">= 1.5",
                        "pass": None, "note": "AMP is CUDA-only in edgedistill (see throughput.amp)"
                        if fast.get("status") == "skipped" else fast.get("error") or "not measured"})
        for name, v in vs.items():
            if _ok(v):
                value = v["images_per_s"]["od"] / v["images_per_s"]["teacher"]
                out.append({"check": f"{model} {v['label']}: od / teacher-alone images/s", "value": value,
                            "target": ">= 0.5", "pass": value >= 0.5})
        loader_ips = tp.get("loader_images_per_s")
        v = vs.get("amp-nhwc") if _ok(vs.get("amp-nhwc")) else vs.get("fp32-nhwc")
        if loader_ips and _ok(v):
            for cfg in ("teacher", "od"):
                value = loader_ips / v["images_per_s"][cfg]
                out.append({"check": f"{model} {v['label']}: loader / {cfg} step images/s", "value": value,
                            "target": "> 1 (loader faster than the step)", "pass": value > 1})
    real = sections.get("real_run", {})
    one = real.get("one_epoch") or {}
    measured = tp.get("models", {}).get(real.get("model"), {})
    bench = measured.get("variants", {}).get(default_variant(torch.device("cuda" if "cuda" in str(
        (one.get("summary") or {}).get("device")) else "cpu")).name, {}) if _ok(measured) else {}
    if one.get("ok") and one.get("epoch_images_per_s") and _ok(bench) and real.get("batch_size") == tp.get("batch_size"):
        value = one["epoch_images_per_s"][0] / bench["images_per_s"]["od"]
        out.append({"check": f"{real['model']} {bench['label']}: edgedistill train epoch / benchmarked od step images/s",
                    "value": value, "target": "about 1 (informational)", "pass": None,
                    "note": "the real epoch adds the loader, metric sums, NaN checks and its first steps' autotuning"})
    dp = sections.get("data_pipeline", {})
    if _ok(dp) and "configs" in dp:
        for cfg, c in dp["configs"].items():
            out.append({"check": f"{dp['model']} {dp['variant']}: {cfg} step fed by the loader / on prepared batches",
                        "value": c["fed_by_loader / prepared"], "target": ">= 0.95 (GPU never waits for data)",
                        "pass": c["loader_keeps_up"]})
    return out


# -- output --------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """Every table of the report as (title, columns, rows)."""
    out: list[tuple[str, list[str], list[list[Any]]]] = []
    s = results["sections"]
    out.append(("sections", ["section", "status", "seconds", "error / reason"],
                [[name, e.get("status"), e.get("seconds"), (e.get("error") or e.get("reason") or "")[:200]]
                 for name, e in s.items()]))
    tp = s.get("throughput", {})
    for model, entry in tp.get("models", {}).items():
        if not _ok(entry):
            continue
        vs = [(n, v) for n, v in entry["variants"].items() if _ok(v)]
        rows = [[cfg] + [fmt(v["images_per_s"][cfg]) for _, v in vs] for cfg in tt.CONFIGS]
        rows.append(["loader alone"] + [fmt(tp.get("loader_images_per_s"))] * len(vs))
        skipped = [n for n, v in entry["variants"].items() if not _ok(v)]
        title = (f"{model} + {tp['students']} {tp['kind']} students, batch {tp['batch_size']}, {tp['device']}: "
                 f"images/s ({entry['rounds_done']} rounds x {tp['steps_per_round']} steps)")
        if skipped:
            title += f"; skipped: {', '.join(skipped)}"
        out.append((title, ["step"] + [v["label"] for _, v in vs], rows))
        ratio_names = list(vs[0][1]["ratios"]) if vs else []
        out.append((f"{model}: ratios (of medians)", ["ratio"] + [v["label"] for _, v in vs],
                    [[r] + [fmt(v["ratios"][r]) for _, v in vs] for r in ratio_names]))
    sh = s.get("shift_share", {})
    if sh.get("runs"):
        rows = []
        for key, e in sh["runs"].items():
            if not _ok(e):
                rows.append([key, "error", None, None, None, None, e.get("error", "")[:120]])
                continue
            rows.append([key, fmt(e["step_ms"]), fmt(e["shift_share_by_ablation"]), fmt(e.get("shift_share_of_op_cpu_time")),
                         fmt(e.get("shift_share_of_kernel_time")), fmt(e.get("kernel_time_share_of_wall")),
                         f"{e['shift_modules']} shifts" + (f"; profiler: {e['profiler_error'][:100]}"
                                                           if "profiler_error" in e else "")])
        out.append(("shift's share of a shift student's step (forward + backward)",
                    ["model / variant", "step ms", "share (ablation)", "share of op CPU time",
                     "share of kernel time", "kernel time / wall", "note"], rows))
    dp = s.get("data_pipeline", {})
    if _ok(dp) and "configs" in dp:
        out.append((f"data pipeline: {dp['model']} {dp['variant']}, loader alone {fmt(dp['loader_images_per_s'])} images/s, "
                    f"dataset on {dp['dataset_on_device']}",
                    ["step", "prepared images/s", "fed by loader images/s", "fed / prepared", "loader / step", "keeps up"],
                    [[n, fmt(c["step_images_per_s_prepared_batches"]), fmt(c["step_images_per_s_fed_by_loader"]),
                      fmt(c["fed_by_loader / prepared"]), fmt(c["loader / step (images/s)"]), fmt(c["loader_keeps_up"])]
                     for n, c in dp["configs"].items()]))
    rows = []
    for section in ("real_run", "real_run_torchrun"):
        e = s.get(section, {})
        for part in ("one_epoch", "kill_resume"):
            r = e.get(part)
            if not isinstance(r, dict):
                continue
            summary = r.get("summary") or (r.get("resume") or {}).get("summary") or {}
            ips = r.get("epoch_images_per_s") or (r.get("resume") or {}).get("epoch_images_per_s") or []
            wall = r.get("wall_s") or (r.get("resume") or {}).get("wall_s")
            student = summary.get("selected_student")
            rows.append([f"{section} {part}", fmt(r.get("ok")), wall,
                         ", ".join(fmt(x) for x in ips) or None,
                         fmt((summary.get("test_top1") or {}).get(student)) if student else None,
                         (r.get("error") or r.get("reason") or "")[:150]])
    if rows:
        out.append(("real CLI runs (Fashion-MNIST)", ["run", "ok", "wall s", "epoch images/s", "student test top-1",
                                                       "error"], rows))
    dd = s.get("ddp_nccl", {})
    if _ok(dd) and "images_per_s_ddp" in dd:
        out.append((f"DDP ({dd.get('backend')}, world size {dd.get('world_size')}): {dd['model']} od, {dd['variant']}",
                    ["plain images/s", "DDP images/s", "overhead", "all-reduce ok", "max weight diff"],
                    [[fmt(dd["images_per_s_plain"]), fmt(dd["images_per_s_ddp"]), fmt(dd["ddp_overhead"]),
                      fmt(dd["all_reduce_ok"]), f"{dd['max_weight_difference_plain_vs_ddp_after_same_steps']:.2e}"]]))
    co = s.get("compile", {})
    if co.get("modes"):
        out.append((f"torch.compile of the OD step: {co.get('model')}, {co.get('variant')}, backend {co.get('backend')}, "
                    f"eager {fmt(co.get('eager_images_per_s'))} images/s",
                    ["mode", "status", "first step s", "images/s", "speed-up", "graph breaks", "error"],
                    [[m, e.get("status"), e.get("first_step_s"), fmt(e.get("images_per_s")), fmt(e.get("speedup")),
                      e.get("graph_breaks"), (e.get("error") or "")[:200]] for m, e in co["modes"].items()]))
    es = s.get("estimate", {})
    if _ok(es) and "variants" in es:
        rows = [[n, fmt(v["od_images_per_s"]), fmt(v["hours"])] for n, v in es["variants"].items()]
        if "hours_compiled" in es:
            hc = es["hours_compiled"]
            rows.append([f"{es['best_variant']} + compile {hc['mode']} (x{hc['speedup']:.2f} measured on {hc['measured_on']})",
                         None, fmt(hc["hours"])])
        out.append((f"paper schedule ({PAPER['model']}, {PAPER['students']} shift students, {PAPER['train_images']:,} "
                    f"images x {PAPER['epochs']} epochs) from {es['model_measured']} on {es.get('device')}",
                    ["variant", "od images/s", "hours (train steps)"], rows))
    if results.get("checks"):
        out.append(("issue 12 checks", ["check", "value", "target", "pass", "note"],
                    [[c["check"], fmt(c["value"]), c["target"], fmt(c["pass"]), (c.get("note") or "")[:150]]
                     for c in results["checks"]]))
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU check ({results.get('device')}, torch {results.get('torch')})", "",
             f"`{results.get('command')}`", "", f"started {results.get('started')}, "
             f"{results.get('elapsed_s')} s of a {results.get('budget_s')} s budget", ""]
    for title, columns, rows in tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            cells = ["" if c is None else str(c).replace("|", "\\|").replace("\n", " ") for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def print_tables(results: dict[str, Any]) -> None:
    from edgedistill.ui import out_console, table

    for title, columns, rows in tables(results):
        out_console.print(table(title, columns, [[None if c is None else str(c) for c in row] for row in rows]))


SECTIONS: tuple[tuple[str, Callable[[Check], dict[str, Any]], float, float], ...] = (
    # name, function, seconds it needs at least (CUDA), (CPU --quick)
    ("environment", section_environment, 0, 0),
    ("throughput", section_throughput, 30, 5),
    ("shift_share", section_shift_share, 10, 3),
    ("data_pipeline", section_data_pipeline, 8, 2),
    ("real_run", lambda c: real_runs(c, "single"), 60, 15),
    ("real_run_torchrun", lambda c: real_runs(c, "torchrun"), 60, 15),
    ("ddp_nccl", section_ddp_nccl, 20, 8),
    ("compile", section_compile, 60, 10),
    ("estimate", section_estimate, 0, 0),
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.probe:
        (probe_ddp if args.probe == "ddp" else probe_compile)(args)
        return None
    started = time.monotonic()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    with training_runtime(args.device, False, False, args.threads) as base:
        results: dict[str, Any] = {
            "benchmark": "gpu-check", "command": shlex.join([sys.executable, *sys.argv] if argv is None
                                                            else ["gpu_check.py", *argv]),
            "started": dt.datetime.now().isoformat(timespec="seconds"), "budget_s": args.budget_s,
            "device": tt.device_name(base.device), "torch": torch.__version__, "quick": args.quick,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("probe", "probe_out")},
            "sections": {},
        }
        check = Check(started, args, base, args.out, work, results)
        log(f"device {results['device']}, torch {torch.__version__}, budget {args.budget_s:.0f} s, out {args.out}")
        for i, (name, fn, need_cuda, need_cpu) in enumerate(SECTIONS, 1):
            run_section(check, i, name, fn, need_cuda if check.cuda else need_cpu)
        results["checks"] = checks(results)
        check.write()
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print_tables(results)
    log(f"done in {results['elapsed_s']} s; wrote {args.out / 'gpu-check.json'} and {args.out / 'gpu-check.md'}")
    return results


if __name__ == "__main__":
    main()
