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
import math
from collections.abc import Iterable
from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from edgedistill.cheap.modules import DepthwiseSeparableConv2d, GroupConv2d, ShiftConv2d
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import Registry, suggest

DEFAULT_GROUPS = 4
"""Group count for ``kind="group"``: 4 gives ~2.8× fewer conv MACs on ResNets
(8 gives ~4×); g = 1 would be no saving at all."""


@dataclass(frozen=True)
class CheapSpec:
    """What the student's cheap convolution is; stored in checkpoints and manifests.

    ``keep`` names convs (as in ``named_modules()``) that stay standard besides the stem, so
    every rebuild of the student from its spec (eval, export) keeps the same ones.
    """

    kind: str
    groups: int = DEFAULT_GROUPS
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        get_kind(self.kind).check_spec(self)
        keep = (self.keep,) if isinstance(self.keep, str) else tuple(self.keep or ())
        object.__setattr__(self, "keep", tuple(dict.fromkeys(str(name) for name in keep)))

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.keep:
            data["keep"] = list(self.keep)
        else:  # specs without kept convs read exactly as before --keep existed
            del data["keep"]
        return data


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


def _padding_mode(conv: nn.Conv2d) -> str:
    return getattr(conv, "padding_mode", "zeros")


@dataclass(frozen=True)
class ConvSite:
    """The standard conv being replaced, as each kind's builder needs it."""

    conv: nn.Conv2d
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: str | tuple[int, int]
    dilation: tuple[int, int]
    padding_mode: str
    where: str
    """For errors: "conv 'layers.0.conv1'"."""
    keep_it: str
    """For hints: the --keep flag that keeps this conv standard."""

    @classmethod
    def of(cls, conv: nn.Conv2d, name: str) -> ConvSite:
        padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
        return cls(conv, _pair(conv.kernel_size), _pair(conv.stride), padding, _pair(conv.dilation), _padding_mode(conv),
                   f"conv '{name}'" if name else "conv", f"--keep {name}" if name else "--keep NAME")


@dataclass(frozen=True)
class CheapKind:
    """One kind of cheap convolution: how it replaces a conv, and what it checks first."""

    name: str
    description: str
    build: Callable[[ConvSite, CheapSpec], nn.Module]
    check_spec: Callable[[CheapSpec], None] = lambda spec: None
    """Refuse settings that make no sense for this kind (before any model exists)."""
    check_model: Callable[[dict[str, nn.Conv2d], CheapSpec], None] = lambda convs, spec: None
    """Refuse, with a hint that works, a model this kind cannot be applied to (all convs at once)."""


CHEAP_KIND_REGISTRY: Registry[CheapKind] = Registry("cheap convolution kind", ordered=True)
"""An unknown kind is an error ("did you mean"), never another kind."""


def register_kind(kind: CheapKind) -> CheapKind:
    return CHEAP_KIND_REGISTRY.register(kind.name)(kind)


cheap_kinds = CHEAP_KIND_REGISTRY.names
get_kind = CHEAP_KIND_REGISTRY.get


def cheap_conv_for(conv: nn.Conv2d, spec: CheapSpec, name: str = "") -> nn.Module:
    """The cheap module that replaces ``conv`` (same in/out channels, output size and padding mode)."""
    return get_kind(spec.kind).build(ConvSite.of(conv, name), spec)


def _shift(site: ConvSite, spec: CheapSpec) -> nn.Module:
    kernel, stride, padding = site.kernel, site.stride, site.padding
    same = padding in ("same", (kernel[0] // 2, kernel[1] // 2))
    if kernel[0] != kernel[1] or kernel[0] % 2 == 0 or site.dilation != (1, 1) or not same or stride[0] != stride[1]:
        raise EdgeDistillError(
            f"{site.where} ({kernel[0]}×{kernel[1]}, padding {padding}, dilation {site.dilation}) cannot become a shift",
            "shift needs a square odd kernel with 'same' padding and no dilation; use --kind depthwise or group, "
            f"or keep this conv standard with {site.keep_it}",
        )
    if site.padding_mode != "zeros":
        raise EdgeDistillError(
            f"{site.where} pads with padding_mode='{site.padding_mode}', but a shift fills with zeros",
            f"use --kind depthwise or group (they keep the padding mode), or keep this conv standard with {site.keep_it}",
        )
    conv = site.conv
    return ShiftConv2d(conv.in_channels, conv.out_channels, kernel[0], stride[0], bias=conv.bias is not None)


def _depthwise(site: ConvSite, spec: CheapSpec) -> nn.Module:
    conv = site.conv
    return DepthwiseSeparableConv2d(conv.in_channels, conv.out_channels, site.kernel, site.stride, site.padding, site.dilation,
                                    bias=conv.bias is not None, padding_mode=site.padding_mode)


def _group(site: ConvSite, spec: CheapSpec) -> nn.Module:
    conv = site.conv
    if conv.in_channels % spec.groups:
        raise EdgeDistillError(
            f"{site.where} has {conv.in_channels} input channels, not divisible by groups={spec.groups}",
            f"choose --groups that divides every channel count of the model, or keep this conv standard with {site.keep_it}",
        )
    return GroupConv2d(conv.in_channels, conv.out_channels, site.kernel, site.stride, site.padding, site.dilation, spec.groups,
                       bias=conv.bias is not None, padding_mode=site.padding_mode)


def _check_groups(spec: CheapSpec) -> None:
    if spec.groups < 2:
        raise EdgeDistillError(f"groups={spec.groups} gives no saving", "use --groups 2 or more (default 4)")


def _groups_hint(convs: dict[str, nn.Conv2d], spec: CheapSpec) -> None:
    """Refuse a --groups that does not divide a replaced conv's channels, with a hint that works:
    the --groups values that divide every replaced conv, or --keep for the convs no value divides."""
    bad = [name for name, conv in convs.items() if conv.in_channels % spec.groups]
    if not bad:
        return
    name = bad[0]
    channels = convs[name].in_channels
    common = math.gcd(*(conv.in_channels for conv in convs.values()))
    working = [g for g in range(2, min(common, 64) + 1) if common % g == 0][:4]
    kept = " ".join(f"--keep {n}" for n in bad[:3]) + (" ..." if len(bad) > 3 else "")
    if working:
        hint = (f"use --groups {' or '.join(map(str, working))} (they divide every replaced conv), "
                f"or keep the convs that --groups {spec.groups} does not divide standard: {kept}")
    else:
        hint = (f"no --groups of 2 or more divides every replaced conv's channels; keep the odd ones standard "
                f"({kept}), or use --kind depthwise")
    more = f" (and {len(bad) - 1} more conv{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise EdgeDistillError(
        f"conv '{name}' has {channels} input channels, not divisible by groups={spec.groups}{more}", hint
    )


def _check_kept(names: dict[str, nn.Module], kept: set[str]) -> None:
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    for name in sorted(kept):
        if name in names and isinstance(names[name], nn.Conv2d):
            continue
        best = suggest(name, convs) if convs else None
        shown = ", ".join(convs[:6]) + (f", ... ({len(convs)} in all)" if len(convs) > 6 else "")
        hint = (f"did you mean '{best}'? " if best else "") + f"give conv names as in model.named_modules(): {shown}"
        if name in names:
            raise EdgeDistillError(f"--keep {name}: '{name}' is a {type(names[name]).__name__}, not a conv", hint)
        raise EdgeDistillError(f"--keep {name}: unknown conv '{name}'", hint)


def kept_convs(model: nn.Module, spec: CheapSpec | None = None, keep: Iterable[str] | None = None) -> set[str]:
    """The convs :func:`make_student` leaves standard: ``keep`` (default: the stem) plus ``spec.keep``."""
    kept = default_kept(model) if keep is None else set(keep)
    return kept | set(spec.keep if spec is not None else ())


def make_student(teacher: nn.Module, spec: CheapSpec, keep: Iterable[str] | None = None) -> nn.Module:
    """Return a copy of ``teacher`` whose standard K×K convs are cheap convs.

    ``keep`` lists conv names (as in ``named_modules``) to leave standard;
    ``None`` keeps the stem. The convs named in ``spec.keep`` stay standard too.
    The new cheap modules are freshly initialised; everything else is a deep copy
    of the teacher (weights included), so build each student from a freshly
    initialised teacher to get independent students. A cheap conv keeps its
    conv's padding mode (a shift, which fills with zeros, refuses any other).
    """
    kept = kept_convs(teacher, spec, keep)
    _check_kept(dict(teacher.named_modules()), kept)
    targets = {name: module for name, module in teacher.named_modules() if is_replaceable(module) and name not in kept}
    if not targets:
        raise EdgeDistillError(
            "the model has no standard K×K convolution to replace",
            "a cheap student needs nn.Conv2d layers with kernel > 1 and groups == 1"
            + (" (--keep leaves none)" if spec.keep else ""),
        )
    get_kind(spec.kind).check_model(targets, spec)
    student = copy.deepcopy(teacher)
    names = dict(student.named_modules())
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = names[parent_name] if parent_name else student
        setattr(parent, attr, cheap_conv_for(names[name], spec, name))
    return student


def replaced_convs(teacher: nn.Module, keep: Iterable[str] | None = None, spec: CheapSpec | None = None) -> list[str]:
    """Names of the convs :func:`make_student` would replace (for reports)."""
    kept = kept_convs(teacher, spec, keep)
    return [n for n, m in teacher.named_modules() if is_replaceable(m) and n not in kept]


register_kind(CheapKind("shift", "parameter- and FLOP-free shift of each channel, then a 1×1 conv", _shift))
register_kind(CheapKind("depthwise", "K×K depthwise conv, then a 1×1 conv (depthwise-separable)", _depthwise))
register_kind(CheapKind("group", "K×K group conv (--groups), then a 1×1 conv that mixes the groups", _group,
                        check_spec=_check_groups, check_model=_groups_hint))
