"""Shared fixtures: small real data and fast settings."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores here: keep each test process to one intra-op thread so parallel
# helpers (onnxruntime, subprocesses) do not oversubscribe the machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
