"""A tiny network as ONNX, for the TVM tuning tests: conv -> relu -> mean -> linear (two tuning tasks)."""

from __future__ import annotations

from pathlib import Path

SHAPE = (1, 3, 16, 16)


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    """conv -> relu -> mean -> linear: two tuning tasks (a conv, a matmul)."""
    import contextlib
    import io
    import warnings

    import torch
    import torch.nn.functional as F
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny().eval(), (torch.randn(SHAPE),), str(path), dynamo=True, input_names=["input"],
                          output_names=["logits"], external_data=False)
    return path
