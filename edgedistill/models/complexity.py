"""Parameter and MAC counts, from ``torch.utils.flop_counter`` (ships with torch).

The counter reports FLOPs of matmul/conv ops as 2 × multiply-accumulates; we
report MACs (FLOPs / 2), the unit of the paper's figures. Shift, pooling,
BatchNorm and element-wise ops count zero, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int

    def to_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on an input of ``input_shape`` (batch included)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2 // input_shape[0]


def complexity(model: nn.Module, input_shape: tuple[int, ...]) -> Complexity:
    return Complexity(count_params(model), count_macs(model, input_shape))
