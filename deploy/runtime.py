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

def require(module: str) -> ModuleType:
    """Import ``module`` or raise a DeployError telling how to install it."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        installed = importlib.util.find_spec(top) is not None
        what = f"{top} is installed but cannot be imported: {exc}" if installed else f"{top} is not installed"
        from deploy.backends import install_hint  # the backends say how their runtime is installed

        raise DeployError(what, install_hint(top) or f"pip install {top}") from None
