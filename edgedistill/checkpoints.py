"""Model checkpoints: one self-describing file per trained network.

A model checkpoint holds the network's :class:`~edgedistill.models.ModelSpec`,
its weights, the data description it was trained for (input channels, size,
normalisation, class names) and its metrics, so ``eval`` and ``export`` need
nothing else. Files are written atomically and read with
``torch.load(weights_only=True)`` (no pickled code is ever executed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill import __version__
from edgedistill.errors import CheckpointError, EdgeDistillError
from edgedistill.models import ModelSpec, create_model
from edgedistill.utils.atomic import save_with

MODEL_FORMAT = "edgedistill-model/1"


@dataclass
class ModelCheckpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    data: dict[str, Any]
    """DataSpec as a dict: name, num_classes, in_channels, image_size, mean, std, class_names."""
    metrics: dict[str, Any] = field(default_factory=dict)
    role: str = ""
    method: str = ""
    source: str = ""

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network with these weights, in eval mode."""
        try:
            model = create_model(self.spec)
            model.load_state_dict(self.state_dict)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {self.source or ''} does not match its own model spec ({self.spec.describe()})",
                "the file was edited or written by an incompatible version; retrain or re-export it",
            ) from exc
        return model.to(device).eval()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (int(self.data["in_channels"]), int(self.data["image_size"]), int(self.data["image_size"]))


def save_model_checkpoint(path: str | Path, checkpoint: ModelCheckpoint) -> None:
    payload = {
        "format": MODEL_FORMAT,
        "edgedistill": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": checkpoint.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        "data": checkpoint.data,
        "metrics": checkpoint.metrics,
        "role": checkpoint.role,
        "method": checkpoint.method,
    }
    save_with(path, lambda tmp: torch.save(payload, tmp))


def load_model_checkpoint(path: str | Path) -> ModelCheckpoint:
    """Read a model checkpoint, with one clear error for each way it can be wrong."""
    path = Path(path)
    payload = _load(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an edgedistill model checkpoint (format: {found})",
            "pass a run directory or a *-best.pt / *-last.pt file written by 'edgedistill train'",
        )
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        return ModelCheckpoint(
            spec=spec,
            state_dict=payload["state_dict"],
            data=payload["data"],
            metrics=payload.get("metrics", {}),
            role=payload.get("role", ""),
            method=payload.get("method", ""),
            source=str(path),
        )
    except (KeyError, TypeError, ValueError, EdgeDistillError) as exc:
        raise CheckpointError(f"{path} is damaged: {exc}", "retrain, or use another checkpoint") from exc


def _load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "check the path; 'edgedistill train' writes RUN_DIR/student-best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, not a torch file at all
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt or not a PyTorch file ({type(exc).__name__})",
            "retrain, or resume the run with 'edgedistill train --resume --out RUN_DIR'",
        ) from exc


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a run's full training state (``checkpoints/train-state.pt``)."""
    return _load(Path(path))


ROLES = ("student", "teacher", "online-teacher")
DATA_KEYS = ("name", "in_channels", "image_size", "num_classes")


def require_standard_teacher(teacher: ModelCheckpoint, data: dict[str, Any], what: str) -> None:
    """A trained standard-conv network for the same data (the teacher of KD and of the device comparison)."""
    if teacher.spec.is_student or teacher.spec.arch == "online-teacher":
        raise CheckpointError(
            f"{what} holds {teacher.spec.describe()}, not a standard-conv network",
            "pass a teacher-best.pt of a run with --method mutual, kd, or alone --network teacher",
        )
    mismatched = [k for k in DATA_KEYS if str(teacher.data.get(k)) != str(data.get(k))]
    if mismatched:
        found = ", ".join(f"{k} {teacher.data.get(k)} (not {data.get(k)})" for k in mismatched)
        raise CheckpointError(f"{what} was trained for other data: {found}", "use a teacher trained on the same dataset")


def resolve_checkpoint(path: str | Path, role: str = "student", which: str = "best") -> Path:
    """A checkpoint file, or ``RUN_DIR/<role>-<which>.pt`` when given a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{role}-{which}.pt"
        if not candidate.is_file():
            found = sorted(p.name for p in path.glob("*-*.pt"))
            raise CheckpointError(
                f"run directory {path} has no {candidate.name}",
                f"it holds: {', '.join(found) or 'no model checkpoints (did training finish?)'}",
            )
        return candidate
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or run directory: {path}", "check the path")
    return path
