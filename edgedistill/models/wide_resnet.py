"""Wide ResNets (Zagoruyko & Komodakis, 2016): WRN-d-k, pre-activation blocks."""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.base import FeatureClassifier, init_weights, residual_stages
from edgedistill.models.registry import register_model


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


class WideResNet(FeatureClassifier):
    def __init__(
        self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.layers, features = residual_stages(PreActBlock, 16, widths, [(depth - 4) // 6] * 3, dropout=dropout)
        self.final = nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(inplace=True))
        self._init_head(nn.Linear(features, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.layers(self.stem(x)))


def _register(depth: int, widen: int) -> None:
    @register_model(f"wrn{depth}_{widen}")
    def factory(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_channels, dropout)


for _depth, _widen in ((16, 2), (16, 4), (16, 8), (28, 10), (40, 2), (40, 4)):
    _register(_depth, _widen)
