"""The cheap-convolution kinds: one registry entry each, with the options it reads.

A kind is a :class:`CheapKind`: how it replaces a standard conv, which options it takes (each a
:class:`KindOption`, which is also its ``--flag`` in ``train``/``models`` and its key in a config
file and in a checkpoint's spec), and what it refuses. Registering one is the only step: the
CLI's flags and help, config files, checkpoints and the student transform all read this table,
and an unknown kind is an error ("did you mean"), never another kind.

Importing this module does not import torch (the CLI reads the table to build its flags); a
kind's builder imports its modules when a student is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import Registry, suggest

if TYPE_CHECKING:
    from torch import nn

DEFAULT_GROUPS = 4
"""Group count for ``kind="group"``: 4 gives ~2.8× fewer conv MACs on ResNets
(8 gives ~4×); g = 1 would be no saving at all."""

WRITTEN_BY_EVERY_KIND = frozenset({"groups"})
"""Keys that checkpoints and run configs written before kinds declared their options carry for
every kind (``groups: 4`` beside ``kind: shift``); a kind that does not take one ignores it."""


def _whole_number(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(float(value))


@dataclass(frozen=True)
class KindOption:
    """One setting of a kind: ``groups`` is ``--groups`` on the command line and ``groups:`` in a
    config file and in the spec a checkpoint stores."""

    name: str
    default: Any
    help: str
    convert: Callable[[Any], Any] = _whole_number
    """Turns a flag's or file's value into the option's type; raises ValueError when it cannot."""
    check: Callable[[Any], str | None] = lambda value: None
    """What is wrong with a value ("gives no saving"), or None."""
    fix: str = ""
    """The hint shown when ``check`` refuses a value."""
    label: str = ""
    """How a model description shows it ("g" → "resnet20 (group, g=4)"); empty: not shown."""
    metavar: str = "N"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def converted(self, raw: Any, where: str | None = None) -> Any:
        """``raw`` as the option's type, or one clear error naming the flag (or ``where`` it was set)."""
        try:
            return self.convert(raw)
        except (TypeError, ValueError):
            raise EdgeDistillError(f"{where or self.flag} must be a whole number, got {raw!r}", self.fix or None) from None

    def value(self, raw: Any) -> Any:
        """``raw`` converted and checked, or one clear error naming the flag."""
        value = self.converted(raw)
        problem = self.check(value)
        if problem:
            raise EdgeDistillError(f"{self.flag} {value} {problem}", self.fix or None)
        return value


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
        padding = conv.padding if isinstance(conv.padding, str) else pair(conv.padding)
        return cls(conv, pair(conv.kernel_size), pair(conv.stride), padding, pair(conv.dilation),
                   getattr(conv, "padding_mode", "zeros"), f"conv '{name}'" if name else "conv",
                   f"--keep {name}" if name else "--keep NAME")


def pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class CheapKind:
    """One kind of cheap convolution: how it replaces a conv, its options, and what it refuses."""

    name: str
    description: str
    build: Callable[[ConvSite, CheapSpec], nn.Module]
    options: tuple[KindOption, ...] = ()
    check_model: Callable[[dict[str, nn.Conv2d], CheapSpec], None] = lambda convs, spec: None
    """Refuse, with a hint that works, a model this kind cannot be applied to (all convs at once)."""

    def option(self, name: str) -> KindOption | None:
        return next((option for option in self.options if option.name == name), None)

    def settings(self, given: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """Every option of this kind, from ``given`` or its default, converted and checked."""
        for name in given:
            if self.option(name) is None:
                takes = ", ".join(o.name for o in self.options) or "none"
                best = suggest(name, [o.name for o in self.options])
                raise EdgeDistillError(f"cheap kind '{self.name}' has no option '{name}'",
                                       (f"did you mean '{best}'? " if best else "") + f"its options: {takes}")
        return tuple((o.name, o.value(given[o.name]) if o.name in given else o.default) for o in self.options)


CHEAP_KIND_REGISTRY: Registry[CheapKind] = Registry("cheap convolution kind", ordered=True)
"""An unknown kind is an error ("did you mean"), never another kind."""


def register_kind(kind: CheapKind) -> CheapKind:
    return CHEAP_KIND_REGISTRY.register(kind.name)(kind)


cheap_kinds = CHEAP_KIND_REGISTRY.names
get_kind = CHEAP_KIND_REGISTRY.get


def kind_options() -> dict[str, tuple[KindOption, list[str]]]:
    """Every option any registered kind takes, by name, with the kinds that take it (for the CLI)."""
    found: dict[str, tuple[KindOption, list[str]]] = {}
    for kind in CHEAP_KIND_REGISTRY.values():
        for option in kind.options:
            found.setdefault(option.name, (option, []))[1].append(kind.name)
    return found


@dataclass(frozen=True, init=False)
class CheapSpec:
    """What the student's cheap convolution is; stored in checkpoints and manifests.

    ``CheapSpec("group", groups=8)``: the kind and its options (defaults filled in, checked).
    ``keep`` names convs (as in ``named_modules()``) that stay standard besides the stem, so
    every rebuild of the student from its spec (eval, export) keeps the same ones.
    """

    kind: str
    settings: tuple[tuple[str, Any], ...]
    keep: tuple[str, ...]

    def __init__(self, kind: str, *, keep: Iterable[str] | str = (), **options: Any) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "settings", get_kind(kind).settings(options))
        keep = (keep,) if isinstance(keep, str) else tuple(keep or ())
        object.__setattr__(self, "keep", tuple(dict.fromkeys(str(name) for name in keep)))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.settings)

    def option(self, name: str) -> Any:
        return self.options[name]

    def labels(self) -> list[str]:
        """The options a model description shows: ["g=4"]."""
        kind = get_kind(self.kind)
        return [f"{o.label}={self.option(o.name)}" for o in kind.options if o.label]

    def flags(self) -> str:
        """The ``train`` flags that choose this cheap conv: "--kind group --groups 8"."""
        return " ".join(["--kind", self.kind, *(f"{get_kind(self.kind).option(k).flag} {v}" for k, v in self.settings)])

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, **self.options}
        if self.keep:  # specs without kept convs read exactly as before --keep existed
            data["keep"] = list(self.keep)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheapSpec:
        """The spec :meth:`to_dict` wrote, or an older checkpoint's (see :data:`WRITTEN_BY_EVERY_KIND`)."""
        options = {k: v for k, v in data.items() if k not in ("kind", "keep")}
        kind = get_kind(data["kind"])
        options = {k: v for k, v in options.items() if kind.option(k) is not None or k not in WRITTEN_BY_EVERY_KIND}
        return cls(data["kind"], keep=data.get("keep") or (), **options)


def spec_from_settings(kind: str, given: Mapping[str, Any], keep: Iterable[str] = ()) -> CheapSpec:
    """The spec that ``--kind`` and the kind flags a user gave (``--groups``) describe. A flag only
    other kinds take is an error, unless it holds that option's default: run configs written
    before kinds declared their options carry ``groups: 4`` for every kind."""
    entry = get_kind(kind)
    known = kind_options()
    for name, value in given.items():
        if entry.option(name) is None and name in known:
            option, kinds = known[name]
            if option.value(value) != option.default:
                raise EdgeDistillError(f"{option.flag} applies to --kind {' or '.join(kinds)}, not {kind}",
                                       f"drop {option.flag}, or pass --kind {kinds[0]}")
    return CheapSpec(kind, keep=tuple(keep), **{k: v for k, v in given.items() if entry.option(k) is not None or k not in known})


def _shift(site: ConvSite, spec: CheapSpec) -> nn.Module:
    from edgedistill.cheap.modules import ShiftConv2d

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
    from edgedistill.cheap.modules import DepthwiseSeparableConv2d

    conv = site.conv
    return DepthwiseSeparableConv2d(conv.in_channels, conv.out_channels, site.kernel, site.stride, site.padding, site.dilation,
                                    bias=conv.bias is not None, padding_mode=site.padding_mode)


def _group(site: ConvSite, spec: CheapSpec) -> nn.Module:
    from edgedistill.cheap.modules import GroupConv2d

    conv, groups = site.conv, spec.option("groups")
    if conv.in_channels % groups:
        raise EdgeDistillError(
            f"{site.where} has {conv.in_channels} input channels, not divisible by groups={groups}",
            f"choose --groups that divides every channel count of the model, or keep this conv standard with {site.keep_it}",
        )
    return GroupConv2d(conv.in_channels, conv.out_channels, site.kernel, site.stride, site.padding, site.dilation, groups,
                       bias=conv.bias is not None, padding_mode=site.padding_mode)


def _groups_hint(convs: dict[str, nn.Conv2d], spec: CheapSpec) -> None:
    """Refuse a --groups that does not divide a replaced conv's channels, with a hint that works:
    the --groups values that divide every replaced conv, or --keep for the convs no value divides."""
    groups = spec.option("groups")
    bad = [name for name, conv in convs.items() if conv.in_channels % groups]
    if not bad:
        return
    name = bad[0]
    channels = convs[name].in_channels
    common = math.gcd(*(conv.in_channels for conv in convs.values()))
    working = [g for g in range(2, min(common, 64) + 1) if common % g == 0][:4]
    kept = " ".join(f"--keep {n}" for n in bad[:3]) + (" ..." if len(bad) > 3 else "")
    if working:
        hint = (f"use --groups {' or '.join(map(str, working))} (they divide every replaced conv), "
                f"or keep the convs that --groups {groups} does not divide standard: {kept}")
    else:
        hint = (f"no --groups of 2 or more divides every replaced conv's channels; keep the odd ones standard "
                f"({kept}), or use --kind depthwise")
    more = f" (and {len(bad) - 1} more conv{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise EdgeDistillError(f"conv '{name}' has {channels} input channels, not divisible by groups={groups}{more}", hint)


GROUPS = KindOption(
    "groups", DEFAULT_GROUPS, "Groups of the K×K group conv (2 or more; 8 saves more, 2 keeps more accuracy).",
    check=lambda g: "gives no saving" if g < 2 else None, fix=f"use --groups 2 or more (default {DEFAULT_GROUPS})", label="g",
)

register_kind(CheapKind("shift", "parameter- and FLOP-free shift of each channel, then a 1×1 conv", _shift))
register_kind(CheapKind("depthwise", "K×K depthwise conv, then a 1×1 conv (depthwise-separable)", _depthwise))
register_kind(CheapKind("group", "K×K group conv (--groups), then a 1×1 conv that mixes the groups", _group,
                        options=(GROUPS,), check_model=_groups_hint))
