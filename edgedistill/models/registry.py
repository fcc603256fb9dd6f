"""Model registry and the serialisable description of a network.

A :class:`ModelSpec` (architecture name + constructor options + optional cheap
conv) is all a checkpoint needs to rebuild a network, teacher or student.
Every registered model follows one small interface (as timm's do):
``forward_features(x) -> feature map``, ``forward_head(features) -> logits``
and ``num_features``, so online distillation can concatenate feature maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from edgedistill.cheap import CheapSpec, make_student
from edgedistill.utils.names import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    return MODELS.register(name)


def model_names() -> list[str]:
    _import_builtin_models()
    return MODELS.names()


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network from scratch."""

    arch: str
    num_classes: int = 10
    in_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    cheap: CheapSpec | None = None

    @property
    def is_student(self) -> bool:
        return self.cheap is not None

    def as_teacher(self) -> ModelSpec:
        return ModelSpec(self.arch, self.num_classes, self.in_channels, dict(self.options), None)

    def describe(self) -> str:
        if self.arch == "online-teacher":
            return f"online teacher over {self.options['m']} × {ModelSpec.from_dict(self.options['student']).describe()}"
        if self.cheap is None:
            return f"{self.arch} (standard conv)"
        extra = "".join(f", {label}" for label in self.cheap.labels())
        if self.cheap.keep:
            extra += f"; standard: {', '.join(self.cheap.keep)}"
        return f"{self.arch} ({self.cheap.kind}{extra})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cheap"] = self.cheap.to_dict() if self.cheap else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        cheap = CheapSpec.from_dict(data["cheap"]) if data.get("cheap") else None
        return cls(data["arch"], int(data["num_classes"]), int(data["in_channels"]), dict(data.get("options") or {}), cheap)


def create_model(spec: ModelSpec) -> nn.Module:
    """Build the (freshly initialised) network described by ``spec``."""
    _import_builtin_models()
    factory = MODELS.get(spec.arch)
    teacher = factory(num_classes=spec.num_classes, in_channels=spec.in_channels, **spec.options)
    return teacher if spec.cheap is None else make_student(teacher, spec.cheap)


def _import_builtin_models() -> None:
    # Registration happens on import of the model modules.
    from edgedistill.models import ensemble, imagenet, resnet_cifar, resnet_imagenet, vgg, wide_resnet  # noqa: F401
