"""Top-1 of the exact artifacts a bundle ships, measured on the run's test split by export.

The checkpoint's ``test_top1`` is PyTorch's figure; an fp32 ONNX file reproduces it (parity
~1e-7) but a quantized one need not. So export runs every artifact this machine can run (the
fp32 ONNX with onnxruntime, an int8 model, a TVM library compiled for this CPU) over the same
test images and records each one's own top-1, with where and on what it was measured.

The test split is the run's own (its config.yaml's seed and limit, as ``edgedistill eval``
carves it), so an fp32 artifact's figure is directly comparable with the checkpoint's; the
images go through the evaluation transform with the checkpoint's normalisation, in batches,
and each batch is fed to every artifact in chunks of its fixed batch size.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import EdgeDistillError

Run = Callable[[np.ndarray], np.ndarray]
CHUNK = 256
"""Images transformed at a time (then split into each artifact's batch)."""


@dataclass(frozen=True)
class TestSplit:
    dataset: Any  # ImageDataset (uint8 images + labels)
    spec: Any  # DataSpec of the checkpoint: its size and normalisation
    description: str
    """e.g. ``digits test (300 images, the run's split)``, recorded in the manifest."""
    runs_split: bool = False
    """Exactly the images the run tested its checkpoints on (so an fp32 artifact must score the same)."""
    run_dir: str | None = None
    """The folder of the checkpoint whose run's split this is."""


def measured_on() -> str:
    """This machine, as the manifest and bench tables name where an accuracy was measured."""
    from deploy.env import cpu_model

    return f"{socket.gethostname()} ({platform.machine()}, {cpu_model() or 'unknown CPU'})"


def run_test_split(checkpoint: Any, data_dir: str | None, limit: int | None) -> TestSplit:
    """The test split the checkpoint's run was tested on (its first ``limit`` images, when given).

    Raises DataError when the dataset cannot be read here or does not match the checkpoint.
    """
    import torch

    from edgedistill.data import DataSpec
    from edgedistill.evaluation import WHOLE_SPLITS, checkpoint_split, run_split_settings

    data = checkpoint.data
    try:
        carving = run_split_settings(Path(checkpoint.source))
        whose = "the run's split"
    except (EdgeDistillError, OSError, TypeError):  # a lone .pt, or an in-memory reference: the whole test split
        carving = WHOLE_SPLITS
        whose = "the whole split: no run config next to the checkpoint"
    dataset, _ = checkpoint_split(data, "test", data_dir, carving)
    if limit is not None and limit < len(dataset):
        dataset = dataset.subset(torch.arange(limit))
        whose = f"the first {limit} of the run's split" if whose == "the run's split" else f"the first {limit}"
    spec = DataSpec(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"]),
                       "class_names": tuple(data["class_names"])})
    return TestSplit(dataset, spec, f"{data['name']} test ({len(dataset)} images, {whose})", whose == "the run's split",
                     str(Path(checkpoint.source).resolve().parent))


def fixed_batch(run: Run, batch: int | None) -> Run:
    """``run`` for any number of images (see :func:`deploy.evaluate.run_fixed_batch`)."""
    from deploy.evaluate import run_fixed_batch

    return lambda x: run_fixed_batch(run, x, batch)


def top1(runs: dict[str, Run], split: TestSplit) -> dict[str, dict[str, Any]]:
    """Each artifact's top-1 on ``split``: ``{name: {"test_top1", "correct", "images"}}``; every
    ``run`` takes any number of images (see :func:`fixed_batch`)."""
    from edgedistill.data import BatchLoader, BatchTransform

    correct = dict.fromkeys(runs, 0)
    total = 0
    for x, y in BatchLoader(split.dataset, CHUNK, BatchTransform(split.spec, train=False), pin_memory=False):
        images, labels = x.numpy().astype(np.float32, copy=False), y.numpy()
        for name, run in runs.items():
            correct[name] += int(np.sum(run(images).argmax(1) == labels))
        total += len(labels)
    return {name: {"test_top1": hits / total, "correct": hits, "images": total} for name, hits in correct.items()}


def device_subset(split: TestSplit, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded subset of ``split`` for the bundle (``deploy.run eval``): uint8 images already
    fitted to the model's input size (N, C, H, W) and int64 labels, in the split's order."""
    import torch

    from edgedistill.data.augment import fit_to_size

    total = len(split.dataset)
    picked = np.sort(np.random.default_rng(seed).permutation(total)[: min(count, total)])
    subset = split.dataset.subset(torch.from_numpy(picked))
    images = fit_to_size(subset.images, split.spec.image_size, split.spec.fit).numpy()
    return np.ascontiguousarray(images, dtype=np.uint8), subset.labels.numpy().astype(np.int64)


def drop_flags(entries: dict[str, dict[str, Any]], reference: str, max_drop_pt: float) -> list[str]:
    """Mark every entry that falls more than ``max_drop_pt`` points below ``reference`` (the fp32
    artifact): ``drop_pt`` on each, ``flagged`` with the reason where it is too much. Returns the reasons."""
    base = entries[reference]["test_top1"]
    flagged = []
    for path, entry in entries.items():
        if path == reference:
            continue
        entry["drop_pt"] = round(100 * (base - entry["test_top1"]), 4)
        entry["flagged"] = None
        if entry["drop_pt"] > max_drop_pt:
            entry["flagged"] = (f"{path} ({entry['precision']}) top-1 {100 * entry['test_top1']:.2f}% is "
                                f"{entry['drop_pt']:.2f} pt below the fp32 model's {100 * base:.2f}% "
                                f"(threshold --max-accuracy-drop {max_drop_pt:g})")
            flagged.append(entry["flagged"])
    return flagged


def label(entry: dict[str, Any]) -> str:
    """Short name of an artifact in tables: ``fp32``, ``int8`` (onnxruntime's), ``tvm``, ``tensorrt fp16``."""
    if entry["backend"] == "onnxruntime":
        return entry["precision"]
    return entry["backend"] if entry["precision"] == "fp32" else f"{entry['backend']} {entry['precision']}"


def describe(entries: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{label(e)} {100 * e['test_top1']:.2f}%" for e in entries)
