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

    ``runtime_only`` (TVM) is for the device CLI: see :class:`deploy.backends.tvm_vm.TvmRunner`.
    """
    artifacts = {model: bundle.artifact_path(model, backend, precision) for model in models}
    runners: Dict[str, Runner] = {
        model: open_runner(backend, artifacts[model], threads, runtime_only=runtime_only) for model in models
    }
    x = make_input(bundle.input_shape, bundle.input_dtype)
    stats = interleaved({model: (lambda runner=runner: runner.run(x)) for model, runner in runners.items()}, config)
    outputs = {model: check_output(model, runner.run(x), bundle.output_shape) for model, runner in runners.items()}
    used_threads = {model: runner.threads for model, runner in runners.items()}
    del runners  # free the models before the memory probes run in child processes

    files = bundle.manifest.get("files", {})
    results = []
    for model in models:
        entry = bundle.model(model)
        relative = bundle.relative(artifacts[model])
        weights = artifacts[model] if artifacts[model].suffix == ".onnx" else bundle.onnx_path(model)  # an int8 model's own
        figures = memory_figures(
            backend, artifacts[model], weights, bundle.input_shape, threads, memory_runs, bundle.input_dtype
        ) if memory else None
        results.append(
            result_entry(
                model, backend, used_threads[model], stats[model].to_dict(), figures, entry,
                output_shape=list(outputs[model].shape),
                precision=get_backend(backend).precision(bundle, artifacts[model]),
                artifact=relative,
                artifact_sha256=files.get(relative) or sha256_file(artifacts[model]),
            )
        )
    return bench_document(bundle, environment_record(max(used_threads.values())), config.to_dict(), results)
