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

from torch import nn

from edgedistill.cheap.kinds import CheapSpec, ConvSite, get_kind, pair
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import suggest


def is_replaceable(conv: nn.Module) -> bool:
    """A standard spatial convolution: ``nn.Conv2d``, one group, kernel > 1×1."""
    return isinstance(conv, nn.Conv2d) and conv.groups == 1 and pair(conv.kernel_size) != (1, 1)


def default_kept(model: nn.Module) -> set[str]:
    """Names of the convs kept standard by default: the stem (first Conv2d)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return {name}
    return set()


def cheap_conv_for(conv: nn.Conv2d, spec: CheapSpec, name: str = "") -> nn.Module:
    """The cheap module that replaces ``conv`` (same in/out channels, output size and padding mode)."""
    return get_kind(spec.kind).build(ConvSite.of(conv, name), spec)


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
