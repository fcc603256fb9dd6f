"""Teacher → student: replace standard K×K convolutions by cheap ones.

The student is the teacher's architecture with a "simple transformation,
without redesign": every standard (``groups == 1``) ``nn.Conv2d`` with a
kernel larger than 1×1 is swapped for a cheap module, except the ones kept
standard — by default the stem (the first ``Conv2d`` in module order). 1×1
convs (projection shortcuts), pooling and the classifier are never touched.
It works on any model built from ``nn.Conv2d``, not only ours.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from torch import nn

from edgedistill.cheap.modules import DepthwiseSeparableConv2d, GroupConv2d, ShiftConv2d
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import unknown_name

CHEAP_KINDS = ("shift", "depthwise", "group")
DEFAULT_GROUPS = 4
"""Group count for ``kind="group"``: 4 gives ~2.8× fewer conv MACs on ResNets
(8 gives ~4×); g = 1 would be no saving at all."""


@dataclass(frozen=True)
class CheapSpec:
    """What the student's cheap convolution is; stored in checkpoints and manifests."""

    kind: str
    groups: int = DEFAULT_GROUPS

    def __post_init__(self) -> None:
        if self.kind not in CHEAP_KINDS:
            raise unknown_name("cheap convolution kind", self.kind, CHEAP_KINDS)
        if self.kind == "group" and self.groups < 2:
            raise EdgeDistillError(
                f"groups={self.groups} gives no saving", "use --groups 2 or more (default 4)"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def is_replaceable(conv: nn.Module) -> bool:
    """A standard spatial convolution: ``nn.Conv2d``, one group, kernel > 1×1."""
    return isinstance(conv, nn.Conv2d) and conv.groups == 1 and _pair(conv.kernel_size) != (1, 1)


def default_kept(model: nn.Module) -> set[str]:
    """Names of the convs kept standard by default: the stem (first Conv2d)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return {name}
    return set()


def cheap_conv_for(conv: nn.Conv2d, spec: CheapSpec, name: str = "") -> nn.Module:
    """The cheap module that replaces ``conv`` (same in/out channels and output size)."""
    bias = conv.bias is not None
    kernel, stride = _pair(conv.kernel_size), _pair(conv.stride)
    dilation = _pair(conv.dilation)
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    where = f"conv '{name}'" if name else "conv"
    if spec.kind == "shift":
        same = padding in ("same", (kernel[0] // 2, kernel[1] // 2))
        if kernel[0] != kernel[1] or kernel[0] % 2 == 0 or dilation != (1, 1) or not same or stride[0] != stride[1]:
            raise EdgeDistillError(
                f"{where} ({kernel[0]}×{kernel[1]}, padding {padding}, dilation {dilation}) cannot become a shift",
                "shift needs a square odd kernel with 'same' padding and no dilation; use --kind depthwise or group",
            )
        return ShiftConv2d(conv.in_channels, conv.out_channels, kernel[0], stride[0], bias=bias)
    if spec.kind == "depthwise":
        return DepthwiseSeparableConv2d(
            conv.in_channels, conv.out_channels, kernel, stride, padding, dilation, bias=bias
        )
    if conv.in_channels % spec.groups:
        raise EdgeDistillError(
            f"{where} has {conv.in_channels} input channels, not divisible by groups={spec.groups}",
            "choose --groups that divides every channel count of the model",
        )
    return GroupConv2d(conv.in_channels, conv.out_channels, kernel, stride, padding, dilation, spec.groups, bias=bias)


def make_student(teacher: nn.Module, spec: CheapSpec, keep: Iterable[str] | None = None) -> nn.Module:
    """Return a copy of ``teacher`` whose standard K×K convs are cheap convs.

    ``keep`` lists conv names (as in ``named_modules``) to leave standard;
    ``None`` keeps the stem. The new cheap modules are freshly initialised;
    everything else is a deep copy of the teacher (weights included), so build
    each student from a freshly initialised teacher to get independent students.
    """
    student = copy.deepcopy(teacher)
    kept = default_kept(student) if keep is None else set(keep)
    names = dict(student.named_modules())
    unknown = kept - names.keys()
    if unknown:
        raise EdgeDistillError(f"cannot keep unknown modules {sorted(unknown)}", "give names from model.named_modules()")
    targets = [name for name, module in names.items() if is_replaceable(module) and name not in kept]
    if not targets:
        raise EdgeDistillError(
            "the model has no standard K×K convolution to replace",
            "a cheap student needs nn.Conv2d layers with kernel > 1 and groups == 1",
        )
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = names[parent_name] if parent_name else student
        setattr(parent, attr, cheap_conv_for(names[name], spec, name))
    return student


def replaced_convs(teacher: nn.Module, keep: Iterable[str] | None = None) -> list[str]:
    """Names of the convs :func:`make_student` would replace (for reports)."""
    kept = default_kept(teacher) if keep is None else set(keep)
    return [n for n, m in teacher.named_modules() if is_replaceable(m) and n not in kept]
