"""ImageNet ResNet-18/50 from torchvision, adapted to the project's model interface.

torchvision is optional (its PyPI wheel does not import beside every torch
build), so it is imported only when one of these models is asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.errors import ToolchainError
from edgedistill.models.base import FeatureClassifier
from edgedistill.models.registry import register_model


def _torchvision_models():  # noqa: ANN202 - module object
    try:
        import torchvision.models as tv_models
    except Exception as exc:  # ImportError, or RuntimeError from a torch/torchvision mismatch
        raise ToolchainError(
            f"ImageNet models need torchvision, which cannot be imported here ({type(exc).__name__}: {exc})",
            "install a torchvision built for your torch: pip install 'edgedistill[torchvision]'",
        ) from exc
    return tv_models


class TorchvisionResNet(FeatureClassifier):
    """A torchvision ResNet exposing ``forward_features`` / ``forward_head``."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self._init_head(net.fc)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


@register_model("resnet18")
def resnet18(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(_torchvision_models().resnet18(num_classes=num_classes), in_channels)


@register_model("resnet50")
def resnet50(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(_torchvision_models().resnet50(num_classes=num_classes), in_channels)
