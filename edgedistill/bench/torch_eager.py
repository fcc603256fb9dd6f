"""PyTorch eager latency and memory: the reference every exported backend is compared with.

Each network runs in the form of its cheap layers that is fastest in eager PyTorch on this machine
(:mod:`edgedistill.export.lowering`), chosen as export chooses one for its backends: each candidate
form checked against the network as trained, the passing ones timed interleaved, the fastest kept.
At batch 1 eager PyTorch pays a fixed cost per operator, so a student as trained (two ops per
layer, K² + 2 for the shift) can be slower than its teacher; its folded form (one dense conv per
layer, the teacher's op count) never is.
"""

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
from edgedistill.export import lowering
from edgedistill.export.parity import compare


def eager_form(model: torch.nn.Module, x: torch.Tensor, threads: int) -> lowering.LoweringChoice:
    """The form of ``model``'s cheap layers that is fastest in eager PyTorch here, among those whose
    outputs on ``x`` match the network as trained."""
    forms = lowering.candidate_forms(model)
    if len(forms) == 1:
        return lowering.fixed_choice(model, forms[0], "the only form")
    with torch.inference_mode():
        reference = model(x).numpy()
        passing = {}
        for form in forms:
            choice = lowering.fixed_choice(model, form, "")
            if compare(reference, choice.model(x).numpy(), ("pytorch", f"pytorch ({form} form)")).passed:
                passing[form] = choice
        stats = interleaved({form: (lambda m=c.model: m(x)) for form, c in passing.items()}, MeasureConfig.quick())
    medians = {form: s.median_ms for form, s in stats.items()}
    chosen = passing[min(medians, key=medians.__getitem__)]
    chosen.how, chosen.median_ms = f"measured in eager PyTorch on this machine, {threads} threads", medians
    return chosen


def _memory(checkpoint: Path, form: str, shape: tuple[int, ...], threads: int, runs: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "edgedistill.bench.torch_probe", "--checkpoint", str(checkpoint), "--lowering", form,
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
    """Measure the networks ``bundle`` was exported from (their checkpoints) in eager mode, each in its
    fastest form (:func:`eager_form`), interleaved; the same document as deploy.bench."""
    torch.set_num_threads(threads)
    shape = bundle.input_shape
    x = torch.randn(shape)
    choices = {role: eager_form(load_model_checkpoint(path).build(), x, threads) for role, path in checkpoints.items()}
    with torch.inference_mode():
        stats = interleaved({role: (lambda m=c.model: m(x)) for role, c in choices.items()}, config)
    results = []
    for role, choice in choices.items():
        entry = bundle.model(role)
        weight_bytes = sum(p.numel() * p.element_size() for p in choice.model.state_dict().values())
        mem = _memory(checkpoints[role], choice.form, shape, threads, memory_runs) if memory else None
        if mem is not None:
            mem["weight_bytes"] = weight_bytes
        results.append(result_entry(role, "pytorch", threads, stats[role].to_dict(), mem, entry, precision="fp32",
                                    lowering=choice.manifest()))
    env = environment_record(threads)
    env["runtimes"] = {**env.get("runtimes", {}), "torch": torch.__version__}
    return bench_document(bundle, env, config.to_dict(), results)
