"""``edgedistill eval``: top-1 of a saved network on a dataset split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edgedistill.checkpoints import load_model_checkpoint, resolve_checkpoint
from edgedistill.data import BatchLoader, BatchTransform, load_dataset
from edgedistill.config import TrainConfig, read_config_file
from edgedistill.distill.runtime import Runtime, pick_device
from edgedistill.distill.trainer import top1
from edgedistill.errors import DataError, EdgeDistillError
from edgedistill.models import complexity


@dataclass
class EvalResult:
    checkpoint: str
    model: str
    dataset: str
    split: str
    images: int
    top1: float
    params: int
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def run_split_settings(checkpoint_path: Path) -> dict:
    """How the run carved its validation split (from its config.yaml), so ``--split val`` is that split."""
    for folder in (checkpoint_path.parent, checkpoint_path.parent.parent):
        if (folder / "config.yaml").is_file():
            cfg = TrainConfig.from_dict(read_config_file(folder / "config.yaml"), source=str(folder / "config.yaml"))
            return {"val_size": cfg.val_split, "seed": cfg.seed, "limit": cfg.limit}
    raise EdgeDistillError(
        f"--split val needs the run's config.yaml next to {checkpoint_path.name}, to carve the same validation split",
        "evaluate the checkpoint inside its run directory, or use --split test",
    )


WHOLE_SPLITS = {"val_size": 0, "seed": 0, "limit": None}
"""Carving that leaves the dataset's own test split whole (no validation images taken from train)."""


def checkpoint_split(data: dict, split: str, data_dir: str | None, carving: dict, limit: int | None = None) -> tuple[Any, Any]:
    """The ``split`` ("test", "val") of the dataset a checkpoint was trained on (``data``, its
    DataSpec as a dict), carved as ``carving``, its first ``limit`` images; and the dataset's spec.
    A dataset that does not match the checkpoint, or an empty split, is a DataError."""
    splits = load_dataset(data["name"], data_dir, image_size=int(data["image_size"]), **carving)
    if splits.spec.in_channels != int(data["in_channels"]) or splits.spec.num_classes != int(data["num_classes"]):
        raise DataError(
            f"{data['name']} does not match the checkpoint ({data['in_channels']} channels, {data['num_classes']} classes)",
            "use the dataset the network was trained on (check --data-dir)",
        )
    dataset = getattr(splits, split)
    if limit is not None:
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    if not len(dataset):
        raise DataError(f"the {split} split of {data['name']} is empty: nothing to evaluate",
                        "use --split test" if split == "val" else "check the dataset files")
    return dataset, splits.spec


def evaluate_checkpoint(
    path: str | Path,
    role: str = "student",
    which: str = "best",
    split: str = "test",
    data_dir: str | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "cpu",
) -> EvalResult:
    if limit is not None and limit < 1:
        raise EdgeDistillError(f"--limit must be at least 1 image, got {limit}", "leave it out to evaluate on the whole split")
    torch_device = pick_device(device)  # an unknown name, or CUDA asked for where there is none: before any reading
    checkpoint_path = resolve_checkpoint(path, role, which)
    checkpoint = load_model_checkpoint(checkpoint_path)
    model = checkpoint.build(torch_device)
    data = checkpoint.data
    carving = run_split_settings(checkpoint_path) if split == "val" else WHOLE_SPLITS
    dataset, spec = checkpoint_split(data, split, data_dir, carving, limit)
    batches = BatchLoader(dataset, batch_size, BatchTransform(spec, train=False), device=torch_device)
    accuracy = top1(lambda x: {"net": model(x)}, batches, Runtime(torch_device))["net"]
    cost = complexity(model, (1, *checkpoint.input_shape))
    return EvalResult(
        str(checkpoint_path), checkpoint.spec.describe(), data["name"], split, len(dataset),
        accuracy, cost.params, cost.macs,
    )
