"""What every registered network shares: the timm-style feature/head split and the residual stages.

``forward_features(x)`` returns the last feature map and ``forward_head`` turns
it into logits (global average pool → linear). Online distillation needs the
split: its teacher concatenates the students' feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """Subclasses build their body, implement ``forward_features`` and call :meth:`_init_head`."""

    num_features: int

    def _init_head(self, fc: nn.Linear) -> None:
        """Global average pool → ``fc`` (a new ``nn.Linear(features, classes)``, or a borrowed one)."""
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc
        self.num_features = fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def residual_stages(block: type[nn.Module], in_channels: int, widths: Sequence[int], depths: Sequence[int],
                    **block_options: object) -> tuple[nn.Sequential, int]:
    """Stages of ``block(in, out, stride, **options)``; every stage but the first halves the resolution."""
    layers: list[nn.Module] = []
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        for i in range(depth):
            layers.append(block(in_channels, width, 2 if stage > 0 and i == 0 else 1, **block_options))
            in_channels = width
    return nn.Sequential(*layers), in_channels


def init_weights(model: nn.Module) -> None:
    """He initialisation for convs, unit BatchNorm (as in the ResNet papers). Nothing to initialise on
    the ``meta`` device (shapes only), where torch's random init would cost a second of set-up."""
    for m in model.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
