"""Cheap convolutions (group, depthwise-separable, shift) and the teacher → student transform."""

from edgedistill.cheap.modules import DepthwiseSeparableConv2d, GroupConv2d, Shift, ShiftConv2d, shift_directions
from edgedistill.cheap.transform import (
    DEFAULT_GROUPS,
    CheapKind,
    CheapSpec,
    cheap_kinds,
    get_kind,
    make_student,
    register_kind,
    replaced_convs,
)

__all__ = [
    "DEFAULT_GROUPS",
    "CheapKind",
    "CheapSpec",
    "cheap_kinds",
    "get_kind",
    "register_kind",
    "DepthwiseSeparableConv2d",
    "GroupConv2d",
    "Shift",
    "ShiftConv2d",
    "make_student",
    "replaced_convs",
    "shift_directions",
]
