"""Benchmark a bundle's student and teacher on this machine (edgedistill-bench/1).

Both models are loaded first, then measured with :func:`deploy.measure.interleaved`
so they see the same machine state; each output is checked against the
manifest's output shape afterwards (the first timed call must be the first
call). Memory figures come from fresh child processes. Every result carries
the accuracy and hash of the exact artifact it timed.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from deploy import BENCH_FORMAT
from deploy.env import environment_record
from deploy.errors import DeployError
from deploy.manifest import Bundle, sha256_file
from deploy.measure import MeasureConfig, interleaved
from deploy.memory import memory_figures
from deploy.backends import Runner, get_backend, open_runner


def make_input(shape: Any, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random input: latency of these CNNs does not depend on the values."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def check_output(model: str, output: np.ndarray, expected: Optional[Any]) -> np.ndarray:
    """Refuse an output whose shape differs from the manifest's or that is not finite."""
    if expected is not None and tuple(output.shape) != tuple(expected):
        raise DeployError(
            f"{model} output shape {tuple(output.shape)} does not match the manifest's {tuple(expected)}",
            "the bundle's model and manifest disagree: re-export the bundle",
        )
    if not np.all(np.isfinite(output)):
        raise DeployError(f"{model} produced non-finite outputs", "the artifact is broken for this runtime: re-export")
    return output


def artifact_accuracy(
    manifest_entry: Dict[str, Any], artifact: Optional[str], precision: Optional[str]
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """The accuracy a result row carries, and where it comes from (``accuracy_source``).

    The top-1 export measured on that exact ``artifact`` (its path in the bundle) when there is one;
    else the checkpoint's, said so, for an fp32 row (an fp32 artifact reproduces it); else, for a
    quantized row, no figure at all rather than the fp32 network's.
    """
    checkpoint = manifest_entry.get("accuracy")
    measured = (manifest_entry.get("artifact_accuracy") or {}).get(artifact) if artifact else None
    if measured and measured.get("test_top1") is not None:
        source = {key: measured.get(key) for key in ("measured_on", "images", "split", "precision", "backend")}
        source.update(measured="artifact", checkpoint_test_top1=(checkpoint or {}).get("test_top1"))
        return {"val_top1": (checkpoint or {}).get("val_top1"), "test_top1": measured["test_top1"]}, source
    if not checkpoint or checkpoint.get("test_top1") is None:
        return checkpoint, None
    if precision not in (None, "fp32"):
        return {"val_top1": None, "test_top1": None}, {"measured": "not measured",
                                                        "checkpoint_test_top1": checkpoint.get("test_top1")}
    return checkpoint, {"measured": "checkpoint"}


def lowering_source(manifest_entry: Dict[str, Any], backend: str) -> Dict[str, Any]:
    """The manifest record of the form a backend's code is in: its artifact's own where the backend
    chose a form for itself (TVM times its forms), else the ONNX graph's."""
    artifact = (manifest_entry.get("artifacts") or {}).get(backend.split("-")[0]) or {}
    return artifact if artifact.get("lowering") else manifest_entry


def result_entry(
    model: str, backend: str, threads: Optional[int], latency: Dict[str, Any], memory: Optional[Dict[str, Any]],
    manifest_entry: Dict[str, Any], **extra: Any
) -> Dict[str, Any]:
    """One row of the edgedistill-bench/1 ``results``: the figures plus what identifies the network."""
    row = {
        "model": model,
        "backend": backend,
        "threads": threads,
        "latency_ms": latency,
        "memory": memory,
        **extra,
        **{key: manifest_entry.get(key) for key in ("params", "macs", "arch", "cheap")},
    }
    row.setdefault("lowering", lowering_source(manifest_entry, backend).get("lowering"))
    row["accuracy"], row["accuracy_source"] = artifact_accuracy(manifest_entry, extra.get("artifact"), extra.get("precision"))
    tuning = ((manifest_entry.get("artifacts") or {}).get("tvm") or {}).get("tuning")
    if backend.startswith("tvm") and tuning is not None:
        row["tvm_tuning_trials"] = tuning.get("trials")
    return row


def bench_document(bundle: Bundle, environment: Dict[str, Any], method: Dict[str, Any], results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The one way an edgedistill-bench/1 document is made, here, on a board or on the host."""
    return {
        "format": BENCH_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment,
        "bundle": {
            "target": bundle.target_name,
            "created": bundle.manifest.get("created"),
            "input_shape": list(bundle.input_shape),
        },
        "method": method,
        "results": results,
    }


def bench_bundle(
    bundle: Bundle,
    backend: str,
    models: List[str],
    threads: int,
    config: MeasureConfig = MeasureConfig(),
    memory: bool = True,
    memory_runs: int = 10,
    precision: Optional[str] = None,
    runtime_only: bool = False,
) -> Dict[str, Any]:
    """Measure ``models`` of ``bundle`` with ``backend``; return the result document.

    ``precision`` picks one artifact per model; None times what the backend compares side by side
    (fp32 and int8 of an int8 onnxruntime bundle), every artifact interleaved in one run.
    ``runtime_only`` (TVM) is for the device CLI: see :class:`deploy.backends.tvm_vm.TvmRunner`.
    """
    spec = get_backend(backend)
    jobs = [(model, p) for model in models for p in ([precision] if precision is not None else spec.side_by_side(bundle, model))]
    artifacts = {job: bundle.artifact_path(job[0], backend, job[1]) for job in jobs}
    runners: Dict[Tuple[str, Optional[str]], Runner] = {
        job: open_runner(backend, artifacts[job], threads, runtime_only=runtime_only) for job in jobs
    }
    x = make_input(bundle.input_shape, bundle.input_dtype)
    label = {job: job[0] if job[1] is None else f"{job[0]} ({job[1]})" for job in jobs}
    stats = interleaved({label[job]: (lambda runner=runner: runner.run(x)) for job, runner in runners.items()}, config)
    outputs = {job: check_output(job[0], runner.run(x), bundle.output_shape) for job, runner in runners.items()}
    used_threads = {job: runner.threads for job, runner in runners.items()}
    del runners  # free the models before the memory probes run in child processes

    files = bundle.manifest.get("files", {})
    results = []
    for job in jobs:
        model, artifact = job[0], artifacts[job]
        relative = bundle.relative(artifact)
        weights = artifact if artifact.suffix == ".onnx" else bundle.onnx_path(model)  # an int8 model's own
        figures = memory_figures(
            backend, artifact, weights, bundle.input_shape, threads, memory_runs, bundle.input_dtype
        ) if memory else None
        results.append(
            result_entry(
                model, backend, used_threads[job], stats[label[job]].to_dict(), figures, bundle.model(model),
                output_shape=list(outputs[job].shape),
                precision=spec.precision(bundle, artifact),
                artifact=relative,
                artifact_sha256=files.get(relative) or sha256_file(artifact),
            )
        )
    return bench_document(bundle, environment_record(max(used_threads.values())), config.to_dict(), results)
