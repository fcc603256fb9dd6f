"""CIFAR ResNets (He et al., 2016): depth 6n+2, three stages of 16/32/64 channels.

Wiring: BasicBlock conv3×3-BN-ReLU-conv3×3-BN, a 1×1 conv + BN projection
shortcut when the shape changes, ReLU after the residual add (the standard
block; the paper's reference code omits that last ReLU). With projection
shortcuts ResNet-56 has 0.856 M parameters and 125.8 M MACs at 32×32.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.base import FeatureClassifier, init_weights, residual_stages
from edgedistill.models.registry import register_model


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch)
    )


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(FeatureClassifier):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layers, features = residual_stages(BasicBlock, width, (width, 2 * width, 4 * width), [(depth - 2) // 6] * 3)
        self._init_head(nn.Linear(features, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


def _register(depth: int) -> None:
    @register_model(f"resnet{depth}")
    def factory(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, width)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth)
