"""Shared fixtures: small real data and fast settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores here: keep each test process to one intra-op thread so parallel
# helpers (onnxruntime, subprocesses) do not oversubscribe the machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mutual_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained run with both a standard-conv teacher and its shift student (digits, ResNet-8)."""
    from edgedistill.config import TrainConfig
    from edgedistill.training import train

    out = tmp_path_factory.mktemp("mutual") / "run"
    train(TrainConfig(dataset="digits", model="resnet8", method="mutual", epochs=1, limit=300, batch_size=64,
                      threads=1, out=str(out)))
    return out
