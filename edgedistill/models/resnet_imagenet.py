"""ImageNet-style ResNet-18/34 without torchvision (its PyPI wheel does not import beside every torch).

Same layout as torchvision's: 7×7/2 stem + 3×3/2 max-pool, four stages of
BasicBlocks (64–512 channels), 1×1 projection shortcuts, 224×224 input. Used
where an ImageNet-size network is needed and torchvision is not available
(e.g. the deploy benchmark); ``resnet18``/``resnet50`` give torchvision's own.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.registry import register_model
from edgedistill.models.resnet_cifar import BasicBlock, _init_weights


class ImageNetResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers: list[nn.Module] = []
        in_ch = 64
        for stage, count in enumerate(blocks):
            out_ch = 64 * 2**stage
            for i in range(count):
                layers.append(BasicBlock(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1))
                in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("imagenet_resnet18")
def imagenet_resnet18(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    return ImageNetResNet((2, 2, 2, 2), num_classes, in_channels)


@register_model("imagenet_resnet34")
def imagenet_resnet34(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), num_classes, in_channels)
