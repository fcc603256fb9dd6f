"""``edgedistill eval``: top-1 of a saved network on a dataset split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from edgedistill.checkpoints import load_model_checkpoint, resolve_checkpoint
from edgedistill.data import BatchLoader, BatchTransform, load_dataset
from edgedistill.errors import DataError
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
    checkpoint_path = resolve_checkpoint(path, role, which)
    checkpoint = load_model_checkpoint(checkpoint_path)
    model = checkpoint.build(device)
    data = checkpoint.data
    splits = load_dataset(data["name"], data_dir, val_size=5000 if split == "val" else 0, limit=limit, image_size=int(data["image_size"]))
    if splits.spec.in_channels != int(data["in_channels"]) or splits.spec.num_classes != int(data["num_classes"]):
        raise DataError(
            f"{data['name']} does not match the checkpoint ({data['in_channels']} channels, {data['num_classes']} classes)",
            "evaluate on the dataset the network was trained on",
        )
    dataset = getattr(splits, split)
    transform = BatchTransform(splits.spec, train=False)
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(dataset, batch_size, transform, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    cost = complexity(model, (1, *checkpoint.input_shape))
    return EvalResult(
        str(checkpoint_path), checkpoint.spec.describe(), data["name"], split, len(dataset),
        correct / max(len(dataset), 1), cost.params, cost.macs,
    )
