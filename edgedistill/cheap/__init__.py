"""Cheap convolutions (group, depthwise-separable, shift) and the teacher → student transform."""

from edgedistill.cheap.modules import DepthwiseSeparableConv2d, GroupConv2d, Shift, ShiftConv2d, shift_directions
from edgedistill.cheap.transform import CHEAP_KINDS, DEFAULT_GROUPS, CheapSpec, make_student, replaced_convs

__all__ = [
    "CHEAP_KINDS",
    "DEFAULT_GROUPS",
    "CheapSpec",
    "DepthwiseSeparableConv2d",
    "GroupConv2d",
    "Shift",
    "ShiftConv2d",
    "make_student",
    "replaced_convs",
    "shift_directions",
]
