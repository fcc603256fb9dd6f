"""Build a method (and its networks) from a training configuration."""

from __future__ import annotations

from edgedistill.checkpoints import load_model_checkpoint, resolve_checkpoint
from edgedistill.cheap import CheapSpec
from edgedistill.config import TrainConfig
from edgedistill.distill.methods import METHODS, ClassicKD, Method, MethodOptions
from edgedistill.errors import CheckpointError
from edgedistill.models import ModelSpec


def student_spec_for(cfg: TrainConfig, num_classes: int, in_channels: int) -> ModelSpec:
    return ModelSpec(cfg.model, num_classes, in_channels, cheap=CheapSpec(cfg.kind, cfg.groups))


def build_method(cfg: TrainConfig, student_spec: ModelSpec) -> Method:
    options = MethodOptions(cfg.temperature, cfg.kl_weight, cfg.students, cfg.network)
    method_cls = METHODS.get(cfg.method)
    if method_cls is not ClassicKD:
        return method_cls(student_spec, options)
    assert cfg.teacher_checkpoint is not None  # TrainConfig.validate guarantees it
    checkpoint = load_model_checkpoint(resolve_checkpoint(cfg.teacher_checkpoint, role="teacher"))
    if checkpoint.spec.is_student or checkpoint.spec.num_classes != student_spec.num_classes:
        raise CheckpointError(
            f"--teacher-checkpoint {cfg.teacher_checkpoint} holds {checkpoint.spec.describe()} "
            f"with {checkpoint.spec.num_classes} classes",
            f"KD needs a trained standard-conv teacher for {student_spec.num_classes} classes "
            "(train one with --method alone --network teacher)",
        )
    return ClassicKD(student_spec, options, checkpoint.build(), checkpoint.spec)
