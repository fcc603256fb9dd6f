"""Child process that measures the peak RSS cost of one model.

Run by :func:`deploy.memory.probe_peak_rss` as
``python3 -m deploy.memory_probe --backend ... --model ... --shape ...``; it
prints one JSON object. Order matters: numpy and the runtime are imported
first, then the resident set is read as the baseline and the kernel's peak
(VmHWM) is reset to it by writing "5" to /proc/self/clear_refs; then the model
is loaded and run ``--runs`` times and the new peak is read. The delta is the
model's cost (weights, arena, activations, runtime state), without the
runtime library itself, which is reported apart as the baseline.

torch is blocked in this process: ``import tvm`` pulls torch in when it is
installed (+200 MB), which would distort the figure on a host.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Callable, Dict, Optional

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> Optional[int]:
    try:
        with open(_STATUS, encoding="ascii") as handle:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS reports bytes, Linux KiB


def _import_runtime(backend: str, threads: int, runtime_only: bool) -> None:
    """Import the runtime before the baseline so its libraries are not counted."""
    from deploy.backends import RunOptions, get_backend
    from deploy.runtime import require

    spec = get_backend(backend)
    spec.configure(threads, RunOptions(runtime_only=runtime_only))
    require(spec.runtime_module)


def measure_peak(work: Callable[[], object]) -> Dict[str, object]:
    """Peak resident memory that ``work()`` adds to this process, and how it was measured.

    The baseline is read after everything already imported; the kernel's peak
    (VmHWM) is reset to it, ``work`` runs, and the new peak is read.
    """
    proc = _status_kib("VmRSS") is not None
    if proc:
        baseline = (_status_kib("VmRSS") or 0) * 1024
        reset = _reset_peak()
    else:
        baseline, reset = _maxrss_bytes(), False
    work()
    peak = (_status_kib("VmHWM") or 0) * 1024 if proc else _maxrss_bytes()
    if proc and reset:
        note = "VmHWM after resetting the peak via /proc/self/clear_refs"
    elif proc:
        note = "VmHWM could not be reset (clear_refs not writable): the peak may include import-time memory"
    else:
        note = "no /proc: lifetime ru_maxrss, not resettable; the delta may under-count"
    return {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak, "peak_rss_delta_bytes": max(peak - baseline, 0), "method": note}


def probe(args: argparse.Namespace) -> Dict[str, object]:
    import numpy as np

    from deploy.manifest import parse_shape
    from deploy.backends import open_runner

    _import_runtime(args.backend, args.threads, args.runtime_only)
    x = np.random.default_rng(0).standard_normal(parse_shape(args.shape)).astype(args.dtype)
    loaded: Dict[str, object] = {}

    def work() -> None:
        runner = open_runner(args.backend, args.model, args.threads, arena=args.arena == "on", runtime_only=args.runtime_only)
        for _ in range(args.runs):
            runner.run(x)
        loaded["runner"] = runner

    peak = measure_peak(work)
    runner = loaded["runner"]
    result: Dict[str, object] = {
        "backend": args.backend,
        "arena": args.arena if args.backend == "onnxruntime" else None,
        "runs": args.runs,
        "threads": runner.threads,  # type: ignore[attr-defined]
        **peak,
        "torch_imported": sys.modules.get("torch") is not None,
    }
    engine = getattr(runner, "engine", None)
    if engine is not None:  # TensorRT: activation memory on the GPU, a separate figure
        result["gpu_activation_bytes"] = int(getattr(engine, "device_memory_size", 0))
    return result


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.memory_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="a registered device backend, e.g. onnxruntime or tvm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1,3,32,32")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--arena", choices=["on", "off"], default="on")
    parser.add_argument("--runtime-only", action="store_true", help="TVM: import the runtime library only")
    args = parser.parse_args(argv)
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # "import torch" now raises ImportError
    from deploy.errors import DeployError

    try:
        print(json.dumps(probe(args)))
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
