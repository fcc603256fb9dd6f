"""Lazy imports of the runtimes, each failing with one clear line.

A board has one runtime installed, rarely all three: nothing in deploy/
imports a runtime at module level, and a missing one becomes a
:class:`DeployError` that says how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from deploy.errors import DeployError

_HOW_TO_INSTALL = {
    "onnxruntime": "pip install onnxruntime",
    "tvm": "pip install apache-tvm apache-tvm-ffi==0.1.14.post1 (needs Python >= 3.10)",
    "tensorrt": "TensorRT comes with JetPack: sudo apt install nvidia-tensorrt python3-libnvinfer",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a DeployError telling how to install it."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        installed = importlib.util.find_spec(top) is not None
        what = f"{top} is installed but cannot be imported: {exc}" if installed else f"{top} is not installed"
        raise DeployError(what, _HOW_TO_INSTALL.get(top, f"pip install {top}")) from None
