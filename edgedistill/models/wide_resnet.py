"""Wide ResNets (Zagoruyko & Komodakis, 2016): WRN-d-k, pre-activation blocks."""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.registry import register_model
from edgedistill.models.resnet_cifar import _init_weights


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(
        self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_ch = 16
        for stage, out_ch in enumerate(widths):
            for i in range(blocks):
                layers.append(PreActBlock(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1, dropout))
                in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.final = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.layers(self.stem(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _register(depth: int, widen: int) -> None:
    @register_model(f"wrn{depth}_{widen}")
    def factory(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_channels, dropout)


for _depth, _widen in ((16, 2), (16, 4), (16, 8), (28, 10), (40, 2), (40, 4)):
    _register(_depth, _widen)
