"""Top-1 of a bundle's artifacts on the device itself, on the fixed test subset the bundle carries.

``edgedistill export`` ships ``evaluation/test-images.npy`` (uint8, N×C×H×W, already fitted to the
model's input size) and ``evaluation/test-labels.npy`` (int64): a seeded subset of the run's test
split, hashed in the manifest like every file. The device normalises them with the manifest's
mean/std exactly as training's evaluation transform does (x · 1/(255·std) − mean/std, float32),
runs each artifact with its runtime (onnxruntime, TVM runtime, a TensorRT engine) and counts
correct predictions. Export measured the same images with the same code on its machine
(``export_top1``), so the two figures compare one to one. numpy + the runtime only.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.errors import DeployError
from deploy.manifest import Bundle, sha256_file

EVAL_FORMAT = "edgedistill-eval/1"
IMAGES = "evaluation/test-images.npy"
LABELS = "evaluation/test-labels.npy"
CHUNK = 256


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> the float32 model input, as the training's evaluation transform makes it."""
    std_a = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    scale = (np.float32(1.0) / (np.float32(255.0) * std_a)).astype(np.float32)
    shift = (-np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1) / std_a).astype(np.float32)
    return (shift + images.astype(np.float32) * scale).astype(np.float32)


def run_fixed_batch(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: Optional[int]) -> np.ndarray:
    """``run`` (a model of fixed ``batch``; None: any) on any number of images: in chunks of ``batch``,
    the last one padded with copies of its last image and the padding's outputs dropped."""
    if batch is None:
        return run(np.ascontiguousarray(x))
    outputs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outputs.append(run(np.ascontiguousarray(chunk))[: batch - pad])
    return np.concatenate(outputs)


def subset_top1(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
                mean: Sequence[float], std: Sequence[float], batch: Optional[int]) -> Dict[str, Any]:
    """``{"test_top1", "correct", "images"}`` of ``run`` (fixed ``batch``, or None for any) on the subset."""
    correct = 0
    for i in range(0, len(images), CHUNK):
        logits = run_fixed_batch(run, normalise(images[i : i + CHUNK], mean, std), batch)
        correct += int(np.sum(logits.argmax(1) == labels[i : i + CHUNK]))
    return {"test_top1": correct / len(images), "correct": correct, "images": int(len(images))}


def load_subset(bundle: Bundle) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """The bundle's test subset (hash-checked with the bundle), and its manifest entry."""
    spec = bundle.manifest.get("device_eval")
    if not spec:
        raise DeployError("this bundle carries no test subset to evaluate on",
                          "re-export it with edgedistill export (--device-eval-samples, 1000 by default)")
    try:
        images = np.load(bundle.path(spec["images"]), allow_pickle=False)
        labels = np.load(bundle.path(spec["labels"]), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read the bundle's test subset: {exc}", "re-copy the bundle") from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise DeployError("the bundle's test subset has the wrong shape or type", "re-export the bundle")
    return images, labels.astype(np.int64), spec


def eval_bundle(bundle: Bundle, backend: str, models: List[str], threads: int, precision: Optional[str] = None,
                limit: Optional[int] = None) -> Dict[str, Any]:
    """Each model's top-1 with ``backend`` on the bundle's test subset (its first ``limit`` images)."""
    from deploy.backends import get_backend, open_runner
    from deploy.env import environment_record

    images, labels, spec = load_subset(bundle)
    if limit is not None:
        if limit < 1:
            raise DeployError(f"--limit must be at least 1, got {limit}", "leave it out to use the whole subset")
        images, labels = images[:limit], labels[:limit]
    mean, std = bundle.manifest["input"]["mean"], bundle.manifest["input"]["std"]
    files = bundle.manifest.get("files", {})
    results = []
    for model in models:
        path = bundle.artifact_path(model, backend, precision)
        relative = bundle.relative(path)
        runner = open_runner(backend, path, threads, runtime_only=True)
        figures = subset_top1(runner.run, images, labels, mean, std, bundle.input_shape[0])  # every artifact takes it
        del runner
        entry = bundle.model(model)
        export = None if limit is not None else \
            ((entry.get("artifact_accuracy") or {}).get(relative) or {}).get("device_subset_top1")
        results.append({
            "model": model, "backend": backend, "precision": get_backend(backend).precision(bundle, path),
            "artifact": relative, "artifact_sha256": files.get(relative) or sha256_file(path),
            **figures,
            "export_top1": export,
            "delta_pt": None if export is None else round(100 * (figures["test_top1"] - export), 4),
        })
    return {
        "format": EVAL_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment_record(threads),
        "bundle": {"target": bundle.target_name, "created": bundle.manifest.get("created")},
        "subset": {"split": spec.get("split"), "images": int(len(images)), "seed": spec.get("seed"),
                   "export_measured_on": spec.get("measured_on")},
        "results": results,
    }


def format_eval_table(document: Dict[str, Any]) -> str:
    headers = ["model", "backend", "precision", "images", "top-1 here", "top-1 at export", "Δ pt"]
    rows = [headers] + [[
        r["model"], r["backend"], str(r["precision"]), str(r["images"]), f"{100 * r['test_top1']:.2f}%",
        "-" if r["export_top1"] is None else f"{100 * r['export_top1']:.2f}%",
        "-" if r["delta_pt"] is None else f"{r['delta_pt']:+.2f}",
    ] for r in document["results"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    subset, env = document["subset"], document["environment"]
    lines.append(f"on {env['hostname']} ({env['machine']}, {env['cpu_model']}): {subset['images']} images, {subset['split']}"
                 f"; export measured them on {subset['export_measured_on']}")
    return "\n".join(lines)
