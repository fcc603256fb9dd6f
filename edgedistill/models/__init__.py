"""Architectures with a registry: CIFAR ResNets, VGG-16, Wide ResNets, torchvision ResNets."""

from edgedistill.models.complexity import Complexity, complexity, count_macs, count_params, spec_complexity
from edgedistill.models.registry import ModelSpec, create_model, model_names, register_model

__all__ = [
    "Complexity",
    "ModelSpec",
    "complexity",
    "count_macs",
    "count_params",
    "create_model",
    "model_names",
    "register_model",
    "spec_complexity",
]
