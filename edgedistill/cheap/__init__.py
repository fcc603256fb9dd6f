"""Cheap convolutions (group, depthwise-separable, shift) and the teacher → student transform.

Names are imported on first use, so that reading the kinds table (:mod:`.kinds`, which the CLI
does to build its flags) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "kinds": ("DEFAULT_GROUPS", "CheapKind", "CheapSpec", "ConvSite", "KindOption", "cheap_kinds", "get_kind",
              "kind_options", "register_kind"),
    "modules": ("DepthwiseSeparableConv2d", "GroupConv2d", "Shift", "ShiftConv2d", "shift_directions"),
    "transform": ("make_student", "replaced_convs"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
