"""Parameter and MAC counts, from ``torch.utils.flop_counter`` (ships with torch).

The counter reports FLOPs of matmul/conv ops as 2 × multiply-accumulates; we
report MACs (FLOPs / 2), the unit of the paper's figures. Shift, pooling,
BatchNorm and element-wise ops count zero, as in the paper.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from edgedistill.models.registry import ModelSpec


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


def spec_complexity(spec: ModelSpec, input_shape: tuple[int, ...], cache: bool = True) -> Complexity:
    """:func:`complexity` of the network ``spec`` describes, cheaply and with the same figures.

    The network is built and run on PyTorch's ``meta`` device: shapes only, no random init and no
    arithmetic (a WRN-28-10's 36 M weights and 5 G MACs took seconds), and FLOPs depend on shapes
    alone. With ``cache`` the figures are kept in
    ``~/.cache/edgedistill/complexity.json``, keyed by the spec, the input shape, the torch version
    and a hash of the model and cheap-conv code, so they are recomputed whenever any of those changes.
    """
    from edgedistill.models.registry import create_model

    key = _cache_key(spec, input_shape) if cache else None
    cached = _read_cache().get(key) if key else None
    if isinstance(cached, dict) and {"params", "macs"} <= cached.keys():
        return Complexity(int(cached["params"]), int(cached["macs"]))
    with torch.device("meta"):
        model = create_model(spec)
    result = complexity(model, input_shape)
    if key:
        _write_cache(key, result)
    return result


def _cache_file() -> Path:
    from edgedistill.utils.cache import cache_dir

    return cache_dir("complexity.json")


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """What the counts depend on besides the spec: the model and cheap-conv code, and torch."""
    digest = hashlib.sha256(torch.__version__.encode())
    root = Path(__file__).resolve().parents[1]
    for folder in ("models", "cheap"):
        for path in sorted((root / folder).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_key(spec: ModelSpec, input_shape: tuple[int, ...]) -> str:
    text = json.dumps({"spec": spec.to_dict(), "shape": list(input_shape), "code": _code_hash()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == _CACHE_FORMAT else {}


def _write_cache(key: str, result: Complexity) -> None:
    from edgedistill.utils.atomic import write_json_atomic

    data = _read_cache() or {"format": _CACHE_FORMAT}
    if len(data) > _CACHE_ENTRIES:  # stale keys of older code: start afresh
        data = {"format": _CACHE_FORMAT}
    data[key] = result.to_dict()
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_cache_file(), data)
    except OSError:  # a read-only home: counting again next time is all it costs
        pass


_CACHE_FORMAT = "edgedistill-complexity-cache/1"
_CACHE_ENTRIES = 2000
