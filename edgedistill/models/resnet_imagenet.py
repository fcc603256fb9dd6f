"""ImageNet-style ResNet-18/34 without torchvision (its PyPI wheel does not import beside every torch).

Same layout as torchvision's: 7×7/2 stem + 3×3/2 max-pool, four stages of
BasicBlocks (64–512 channels), 1×1 projection shortcuts, 224×224 input. Used
where an ImageNet-size network is needed and torchvision is not available
(e.g. the deploy benchmark); ``resnet18``/``resnet50`` give torchvision's own.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.base import FeatureClassifier, init_weights, residual_stages
from edgedistill.models.registry import register_model
from edgedistill.models.resnet_cifar import BasicBlock


class ImageNetResNet(FeatureClassifier):
    def __init__(self, depths: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        self.layers, features = residual_stages(BasicBlock, 64, (64, 128, 256, 512), depths)
        self._init_head(nn.Linear(features, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


@register_model("imagenet_resnet18")
def imagenet_resnet18(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    return ImageNetResNet((2, 2, 2, 2), num_classes, in_channels)


@register_model("imagenet_resnet34")
def imagenet_resnet34(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), num_classes, in_channels)
