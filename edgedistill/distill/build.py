"""Build a method (and its networks) from a training configuration."""

from __future__ import annotations

from edgedistill.checkpoints import load_model_checkpoint, require_standard_teacher, resolve_checkpoint
from edgedistill.config import TrainConfig
from edgedistill.distill.methods import METHODS, ClassicKD, Method, MethodOptions
from edgedistill.models import ModelSpec


def student_spec_for(cfg: TrainConfig, num_classes: int, in_channels: int) -> ModelSpec:
    return ModelSpec(cfg.model, num_classes, in_channels, cheap=cfg.cheap_spec())


def build_method(cfg: TrainConfig, student_spec: ModelSpec, data: dict | None = None) -> Method:
    """The method's networks; ``data`` (the DataSpec as a dict) lets KD check its teacher's data."""
    options = MethodOptions(cfg.temperature, cfg.kl_weight, cfg.students, cfg.network)
    method_cls = METHODS.get(cfg.method)
    if method_cls is not ClassicKD:
        return method_cls(student_spec, options)
    assert cfg.teacher_checkpoint is not None  # TrainConfig.validate guarantees it
    checkpoint = load_model_checkpoint(resolve_checkpoint(cfg.teacher_checkpoint, role="teacher"))
    expected = data or {**checkpoint.data, "num_classes": student_spec.num_classes, "in_channels": student_spec.in_channels}
    require_standard_teacher(checkpoint, expected, f"--teacher-checkpoint {cfg.teacher_checkpoint}")
    return ClassicKD(student_spec, options, checkpoint.build(), checkpoint.spec)
