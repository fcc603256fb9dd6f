"""VGG-16 with batch norm, CIFAR variant (one 512→classes linear layer)."""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.base import FeatureClassifier, init_weights
from edgedistill.models.registry import register_model

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(FeatureClassifier):
    def __init__(self, layout: tuple, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(ch, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                ch = int(item)
        self.features = nn.Sequential(*layers)
        self._init_head(nn.Linear(ch, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(VGG16_LAYOUT, num_classes, in_channels)
