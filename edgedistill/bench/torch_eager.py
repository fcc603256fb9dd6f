"""PyTorch eager latency and memory: the reference every exported backend is compared with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from deploy.bench import bench_document, result_entry
from deploy.env import environment_record
from deploy.manifest import Bundle
from deploy.measure import MeasureConfig, interleaved
from edgedistill.checkpoints import load_model_checkpoint
from edgedistill.errors import EdgeDistillError


def _memory(checkpoint: Path, shape: tuple[int, ...], threads: int, runs: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "edgedistill.bench.torch_probe", "--checkpoint", str(checkpoint),
         "--shape", ",".join(map(str, shape)), "--threads", str(threads), "--runs", str(runs)],
        capture_output=True, text=True, timeout=600,
    )
    if done.returncode:
        raise EdgeDistillError(f"the PyTorch memory probe failed: {done.stderr.strip()[-300:]}", "rerun with --no-memory")
    figures = json.loads(done.stdout)
    figures["file_bytes"] = checkpoint.stat().st_size
    return figures


def bench_pytorch(
    bundle: Bundle, checkpoints: dict[str, Path], threads: int, config: MeasureConfig, memory: bool = True,
    memory_runs: int = 10,
) -> dict[str, Any]:
    """Measure the networks ``bundle`` was exported from (their checkpoints) in eager mode, interleaved;
    the same document as deploy.bench."""
    torch.set_num_threads(threads)
    shape = bundle.input_shape
    x = torch.randn(shape)
    models = {role: load_model_checkpoint(path).build() for role, path in checkpoints.items()}
    with torch.inference_mode():
        stats = interleaved({role: (lambda m=m: m(x)) for role, m in models.items()}, config)
    results = []
    for role, model in models.items():
        entry = bundle.model(role)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        mem = _memory(checkpoints[role], shape, threads, memory_runs) if memory else None
        if mem is not None:
            mem["weight_bytes"] = weight_bytes
        results.append(result_entry(role, "pytorch", threads, stats[role].to_dict(), mem, entry, precision="fp32"))
    env = environment_record(threads)
    env["runtimes"] = {**env.get("runtimes", {}), "torch": torch.__version__}
    return bench_document(bundle, env, config.to_dict(), results)
