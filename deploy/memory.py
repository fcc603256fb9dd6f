"""Memory figures of one model, each kept separate (never summed or mixed).

- ``file_bytes``: size of the artifact the backend runs (.onnx, .so, .engine);
- ``weight_bytes``: sum of the ONNX initializers (the same weights are baked
  into the TVM library and the TensorRT engine);
- ``peak_rss_delta_bytes``: peak resident memory added by loading the model
  and running it, measured in a fresh child process
  (:mod:`deploy.memory_probe`) so nothing else in this process counts;
  for onnxruntime twice, with its CPU memory arena off (the headline figure,
  ``arena: "off"``) and on (``peak_rss_delta_bytes_arena_on``), because the
  arena keeps freed blocks and inflates the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from deploy.backends import get_backend
from deploy.errors import DeployError
from deploy.onnx_weights import weight_bytes

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


def file_bytes(path: Path) -> int:
    return Path(path).stat().st_size


def probe_peak_rss(
    backend: str,
    model_path: Path,
    input_shape: Sequence[int],
    threads: int,
    runs: int = 10,
    arena: bool = True,
    runtime_only: bool = True,
    dtype: str = "float32",
    timeout: float = 600.0,
    python: Optional[str] = None,
) -> Dict[str, object]:
    """Run :mod:`deploy.memory_probe` in a fresh interpreter and return its figures."""
    command = [
        python or sys.executable,
        "-m",
        "deploy.memory_probe",
        "--backend",
        backend,
        "--model",
        str(model_path),
        "--shape",
        ",".join(str(d) for d in input_shape),
        "--dtype",
        dtype,
        "--threads",
        str(threads),
        "--runs",
        str(runs),
        "--arena",
        "on" if arena else "off",
    ]
    if runtime_only:
        command.append("--runtime-only")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"memory probe of {Path(model_path).name} timed out after {timeout:.0f} s", "retry with fewer --runs") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        reason = lines[-1][len("error: ") :] if lines[-1].startswith("error: ") else lines[-1]
        raise DeployError(f"memory probe of {Path(model_path).name} failed: {reason}", "run the probe by hand to see the full log")
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise DeployError(f"memory probe of {Path(model_path).name} printed no result", "run the probe by hand to see the full log") from None


def memory_figures(
    backend: str,
    artifact: Path,
    onnx_model: Path,
    input_shape: Sequence[int],
    threads: int,
    runs: int = 10,
    dtype: str = "float32",
) -> Dict[str, object]:
    """The ``memory`` object of the edgedistill-bench/1 schema for one model."""
    figures: Dict[str, object] = {"file_bytes": file_bytes(artifact), "weight_bytes": weight_bytes(onnx_model)}
    off = probe_peak_rss(backend, artifact, input_shape, threads, runs, arena=False, dtype=dtype)
    figures["peak_rss_delta_bytes"] = off["peak_rss_delta_bytes"]
    has_arena = get_backend(backend).has_arena
    figures["arena"] = "off" if has_arena else None
    if has_arena:
        on = probe_peak_rss(backend, artifact, input_shape, threads, runs, arena=True, dtype=dtype)
        figures["peak_rss_delta_bytes_arena_on"] = on["peak_rss_delta_bytes"]
    figures["baseline_rss_bytes"] = off["baseline_rss_bytes"]
    if "gpu_activation_bytes" in off:
        figures["gpu_activation_bytes"] = off["gpu_activation_bytes"]
    figures["method"] = off["method"]
    return figures
