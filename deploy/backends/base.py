"""The device half of a backend: how a board loads and runs an artifact, and what it needs.

A backend is one :class:`DeviceBackend` registered under its name; the device runner, the memory
probe, the bundle's requirements and the manifest's artifact lookup all read this table, so a new
runtime is one module here (plus its host half in ``edgedistill.backends``). Nothing here imports
a runtime at module level: a board has one installed, rarely all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np

from deploy.errors import DeployError

if TYPE_CHECKING:
    from deploy.manifest import Bundle

PRECISIONS = ("fp32", "fp16", "int8")


class Runner:
    """A loaded model. ``threads`` is the thread count the runtime really uses.

    ``run`` takes a host numpy array and returns a host numpy array for every backend, so a timed
    call always covers the same boundary: input handed to the runtime, inference, output back in
    host memory. Constructing a runner never runs the model, so the first timed call really is the
    first run.
    """

    backend = ""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise DeployError(f"model file {self.path} does not exist", "check the bundle or the path")

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class RunOptions:
    """Switches some backends read: onnxruntime's CPU memory ``arena``; TVM's ``runtime_only``
    (import the runtime library, not the compiler: the memory of a real deployment)."""

    arena: bool = True
    runtime_only: bool = False


@dataclass(frozen=True)
class DeviceBackend:
    name: str
    description: str
    runtime_module: str
    """Imported before the memory probe's baseline, so the runtime library itself is not counted."""
    install: str
    """How a device gets the runtime (printed when the import fails)."""
    requirements: Tuple[str, ...]
    """Lines of a bundle's requirements.txt for this backend."""
    open: Callable[[Path, int, RunOptions], Runner]
    artifact: Callable[["Bundle", str, Optional[str]], Path]
    """The file this backend runs for a model of a bundle (precision: for engines built per precision)."""
    precision: Callable[["Bundle", Path], Optional[str]] = lambda bundle, path: "fp32"
    side_by_side: Callable[["Bundle", str], List[Optional[str]]] = lambda bundle, model: [None]
    """The precisions a bench times for a model, side by side in one run, when none is asked for
    (onnxruntime: fp32 and the int8 model of an int8 bundle); None: the bundle's one artifact."""
    has_arena: bool = False
    """Whether the memory figures are taken with the arena off and on (onnxruntime)."""
    env: Callable[[int, RunOptions], Dict[str, str]] = field(default=lambda threads, options: {})
    """Environment the runtime reads at import (thread pools): set before importing it."""

    def configure(self, threads: int, options: RunOptions) -> None:
        os.environ.update(self.env(threads, options))


DEVICE_BACKENDS: Dict[str, DeviceBackend] = {}


def register(backend: DeviceBackend) -> DeviceBackend:
    if backend.name in DEVICE_BACKENDS:
        raise ValueError(f"backend {backend.name!r} registered twice")
    DEVICE_BACKENDS[backend.name] = backend
    return backend


def backend_names() -> List[str]:
    return list(DEVICE_BACKENDS)


def get_backend(name: str) -> DeviceBackend:
    try:
        return DEVICE_BACKENDS[name]
    except KeyError:
        raise DeployError(f"unknown backend '{name}'", "valid: " + ", ".join(DEVICE_BACKENDS)) from None


def open_runner(backend: str, path: Path, threads: int, arena: bool = True, runtime_only: bool = False) -> Runner:
    """Load ``path`` with ``backend``'s runtime."""
    options = RunOptions(arena=arena, runtime_only=runtime_only)
    spec = get_backend(backend)
    spec.configure(threads, options)
    return spec.open(Path(path), threads, options)


def install_hint(module: str) -> Optional[str]:
    """How to install the runtime whose top-level module is ``module``, if a backend says."""
    top = module.split(".", 1)[0]
    for spec in DEVICE_BACKENDS.values():
        if spec.runtime_module.split(".", 1)[0] == top:
            return spec.install
    return None
