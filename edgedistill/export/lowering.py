"""Equivalent forms of the cheap layers for deployment ("lowerings"), chosen per network.

A cheap layer is trained as a spatial op followed by a 1×1 conv (:class:`_SpatialThenPointwise`).
What is fastest on a device is another matter, so export can rewrite each cheap layer into an
equivalent form before ONNX export:

* ``trained`` — as trained: the shift is Pad + K² Slice + Concat, group/depthwise are grouped convs;
* ``onehot`` — the shift as one depthwise Conv with fixed one-hot K×K weights (one standard ONNX op
  on the runtime's depthwise kernel instead of K² copies; it executes K² MACs per output that the
  architecture's count calls free). Group and depthwise layers stay as trained;
* ``folded`` — spatial op and 1×1 conv folded into one dense K×K conv (exact: both are linear and
  nothing lies between them), which costs what the teacher's layer costs and so bounds the
  student's latency by its teacher's on any backend;
* ``fused`` (TVM only) — the shift and its 1×1 conv compiled as one kernel that reads the shifted
  addresses directly (:mod:`edgedistill.backends.tvm.fused_shift`): no shifted copy in memory and
  no K² MACs of a one-hot conv. Its graph is the ``onehot`` one, which is what another backend
  (onnxruntime, for the bundle's ONNX) is given when ``fused`` is asked for.

A form that belongs to one backend (``Lowering.backend``) is a candidate of that backend only.

Every form computes the same function; export checks each against the trained network before it
can ship. ``auto`` times the candidates on the target and keeps the fastest; the choice is cached
per (architecture, input shape, target, runtime version) in ``~/.cache/edgedistill/lowering``, since
latency does not depend on the weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgedistill.cheap.modules import Shift, _one_hot_kernel, _SpatialThenPointwise
from edgedistill.errors import EdgeDistillError
from edgedistill.models import complexity
from edgedistill.utils.atomic import write_json_atomic
from edgedistill.utils.cache import cache_dir
from edgedistill.utils.names import Registry, unknown_name

AUTO = "auto"


@dataclass(frozen=True)
class Lowering:
    name: str
    description: str
    rewrite: Callable[[_SpatialThenPointwise], nn.Module | None]
    """The replacement of one cheap layer, or None to keep it as trained."""
    backend: str | None = None
    """The one backend that compiles this form (its own kernels); None: any backend."""
    graph: str | None = None
    """For a backend's own form: the form whose graph it compiles, which every other backend gets instead."""
    arithmetic: str | None = None
    """The form whose MACs this one's kernels execute (None: its graph's), e.g. the fused shift kernel
    executes the trained form's (the shift's moves are addresses, not the one-hot conv's K² MACs)."""

    def ships_on(self, backend: str | None) -> bool:
        """Whether ``backend`` can ship this form (every backend, but for another backend's own form)."""
        return self.backend in (None, backend)

    def for_backend(self, backend: str | None) -> str:
        """The form ``backend`` ships when this one is asked for (this one, or the graph it compiles from)."""
        return self.name if self.ships_on(backend) else str(self.graph)


LOWERINGS: Registry[Lowering] = Registry("lowering", ordered=True)


Rewrite = Callable[[_SpatialThenPointwise], nn.Module | None]


def register(name: str, description: str) -> Callable[[Rewrite], Lowering]:
    """A form every backend can ship: the decorated function rewrites one cheap layer."""
    def decorator(rewrite: Rewrite) -> Lowering:
        if name == AUTO:
            raise ValueError(f"'{AUTO}' is not a form but the choice among them")
        return LOWERINGS.register(name)(Lowering(name, description, rewrite))

    return decorator


def register_backend_form(name: str, description: str, *, backend: str, graph: str, arithmetic: str) -> Lowering:
    """A form of one backend's own: it compiles the graph of form ``graph`` with kernels of its own,
    which execute the MACs of form ``arithmetic``."""
    return LOWERINGS.register(name)(Lowering(name, description, LOWERINGS.get(graph).rewrite, backend, graph, arithmetic))


lowering_names = LOWERINGS.names


def get_lowering(name: str) -> Lowering:
    if name not in LOWERINGS:  # the suggestion may be auto, which is not a registered form
        raise unknown_name("lowering", name, [*LOWERINGS.names(), AUTO])
    return LOWERINGS.get(name)


def graph_form(name: str) -> str:
    """The form whose ONNX graph form ``name`` is compiled from (itself, but for a backend's own form)."""
    return get_lowering(name).graph or name


def check_requested(name: str, backend: str) -> None:
    """Refuse an unknown ``--lowering``, or a form of another backend than the one exporting."""
    form = get_lowering(name)
    if not form.ships_on(backend):
        others = [n for n in LOWERINGS.names() if LOWERINGS.get(n).backend is None]
        raise EdgeDistillError(f"--lowering {name} is compiled by the {form.backend} backend only, not {backend}",
                               f"add --backend {form.backend}, or use --lowering {AUTO} or one of {', '.join(others)}")


def _shift_kernel(shift: Shift, like: torch.Tensor) -> torch.Tensor:
    """The (C, 1, K, K) one-hot depthwise weights that compute ``shift`` (contiguous NCHW)."""
    kernel = _one_hot_kernel(shift.channels, shift.kernel_size, False, torch.device("cpu"), torch.float32)
    return kernel.to(dtype=like.dtype, device=like.device).contiguous()


def _spatial_kernel(layer: _SpatialThenPointwise) -> tuple[torch.Tensor, nn.Conv2d | None]:
    """The spatial op as a dense (C, C, K, K) kernel, and the conv whose geometry it keeps
    (None for a shift: stride 1, zero padding K//2)."""
    pointwise = layer.pointwise.weight
    spatial = layer.spatial
    if isinstance(spatial, Shift):
        kernel = _shift_kernel(spatial, pointwise)
        conv = None
    elif isinstance(spatial, nn.Conv2d):
        kernel, conv = spatial.weight, spatial
    else:
        raise TypeError(f"no dense form for spatial op {type(spatial).__name__}")
    channels, per_group = kernel.shape[0], kernel.shape[1]
    groups = channels // per_group
    dense = kernel.new_zeros(channels, channels, *kernel.shape[2:])
    for g in range(groups):  # block-diagonal: output channel m reads only its group's inputs
        rows = slice(g * per_group, (g + 1) * per_group)
        dense[rows, rows] = kernel[rows]
    return dense, conv


@register("trained", "as trained: spatial op (shift = Pad/Slice/Concat, grouped conv) then 1×1 conv")
def _as_trained(_layer: _SpatialThenPointwise) -> None:
    return None


@register("onehot", "the shift as one depthwise conv with fixed one-hot weights; group/depthwise as trained")
def _shift_as_depthwise(layer: _SpatialThenPointwise) -> nn.Module | None:
    shift = layer.spatial
    if not isinstance(shift, Shift) or shift.channels < shift.kernel_size**2:
        return None
    k = shift.kernel_size
    depthwise = nn.Conv2d(shift.channels, shift.channels, k, padding=k // 2, groups=shift.channels, bias=False)
    with torch.no_grad():
        depthwise.weight.copy_(_shift_kernel(shift, layer.pointwise.weight))
    depthwise.weight.requires_grad_(False)
    return nn.Sequential(depthwise, copy.deepcopy(layer.pointwise))


@register("folded", "spatial op and 1×1 conv folded into one dense K×K conv (the teacher's cost)")
def _fold(layer: _SpatialThenPointwise) -> nn.Module:
    pointwise = layer.pointwise
    dense, spatial = _spatial_kernel(layer)
    k = dense.shape[-1]
    if spatial is None:  # shift: zero padding K//2, stride on the 1×1 conv
        geometry = {"stride": pointwise.stride, "padding": k // 2, "dilation": 1, "padding_mode": "zeros"}
    else:  # the spatial conv subsamples; the 1×1 conv has stride 1
        geometry = {"stride": tuple(a * b for a, b in zip(spatial.stride, pointwise.stride)), "padding": spatial.padding,
                    "dilation": spatial.dilation, "padding_mode": spatial.padding_mode}
    conv = nn.Conv2d(pointwise.in_channels, pointwise.out_channels, k, bias=pointwise.bias is not None, **geometry)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("om,mckl->ockl", pointwise.weight[:, :, 0, 0], dense))
        if pointwise.bias is not None:
            conv.bias.copy_(pointwise.bias)
    return conv


register_backend_form("fused", "TVM: the shift and its 1×1 conv as one kernel reading the shifted addresses (graph: onehot)",
                      backend="tvm", graph="onehot", arithmetic="trained")  # TVM's fused_shift rewrites each one-hot conv and its 1×1 in one kernel


def lower(model: nn.Module, name: str) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every cheap layer in form ``name``, and how many layers changed."""
    form = get_lowering(name)
    lowered = copy.deepcopy(model)
    replaced = 0
    for parent in list(lowered.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _SpatialThenPointwise):
                replacement = form.rewrite(child)
                if replacement is not None:
                    setattr(parent, child_name, replacement)
                    replaced += 1
    return lowered.eval(), replaced


def candidate_forms(model: nn.Module, backend: str | None = None) -> list[str]:
    """The forms ``backend`` can ship that change ``model`` (plus ``trained``): a standard-conv teacher
    has only ``trained``. A backend's own forms are candidates of that backend only."""
    names = ["trained"]
    for name in LOWERINGS.names():
        if name != "trained" and LOWERINGS.get(name).ships_on(backend) and lower(model, name)[1]:
            names.append(name)
    return names


@dataclass(frozen=True)
class Fallback:
    """The form shipped where the candidates cannot be timed, and the measurement that says so."""

    form: str
    evidence: str


ANY_CPU = "*"
FALLBACKS: dict[tuple[str, str], Fallback] = {
    ("onnxruntime", "x86_64"): Fallback(
        "onehot", "measured best with onnxruntime 1.32 on x86-64 (ResNet-20 shift 32×32, 2 threads: onehot 0.27 ms, "
                  "trained 1.09; ResNet-18 224×224: 7.6 vs 13.5 ms; 2026-12)"),
    ("tvm", ANY_CPU): Fallback(
        "fused", "measured best with TVM 0.27 on x86-64 (ResNet-20 shift 32×32 untuned, channels-last, 2 threads: "
                 "fused 0.16 ms, onehot 0.19, folded 0.44, trained 0.46; 2026-12-07)"),
}
"""(backend, CPU architecture) -> the form measured best there. Only the shift has a choice without
timing (folded wins only where measured); group and depthwise layers stay as trained. A form that
does not apply to the network (no shift to fuse) falls back to ``trained``."""


def fallback_form(backend: str, arch: str) -> Fallback:
    """The measured-best form for ``backend`` on a CPU of ``arch``; where that pair was never measured,
    the nearest measurement (the same backend on another CPU, else onnxruntime on x86-64), saying so."""
    if (backend, arch) in FALLBACKS:
        return FALLBACKS[backend, arch]
    if (backend, ANY_CPU) in FALLBACKS:
        return FALLBACKS[backend, ANY_CPU]
    elsewhere = next(((a, f) for (b, a), f in FALLBACKS.items() if b == backend), None)
    if elsewhere:
        return Fallback(elsewhere[1].form, f"never measured with {backend} on {arch}; {elsewhere[1].evidence}")
    nearest = FALLBACKS["onnxruntime", "x86_64"]
    return Fallback(nearest.form, f"never measured with {backend}; {nearest.evidence}")


@dataclass
class LoweringChoice:
    """The form a network ships in, and why."""

    form: str
    model: nn.Module
    layers: int
    """Cheap layers rewritten."""
    how: str
    """"requested", "measured on this machine with onnxruntime", "not measured: ...", "cached ..."."""
    median_ms: dict[str, float]
    """Median latency of each candidate form that was timed."""
    arithmetic: nn.Module
    """The network whose MAC count this form's kernels execute (``model`` itself, but for a backend's own form)."""

    def executed_macs(self, input_shape: tuple[int, ...]) -> int:
        """The MACs this form really executes on one input of ``input_shape`` (N, C, H, W)."""
        return complexity(self.arithmetic, (1, *input_shape[1:])).macs

    def manifest(self) -> dict[str, object]:
        return {"form": self.form, "layers": self.layers, "how": self.how,
                "candidates_median_ms": {k: round(v, 4) for k, v in self.median_ms.items()}}


def fixed_choice(model: nn.Module, form: str, how: str) -> LoweringChoice:
    lowered, layers = lower(model, form)
    arithmetic = get_lowering(form).arithmetic
    return LoweringChoice(form, lowered, layers, how, {}, lowered if arithmetic is None else lower(model, arithmetic)[0])


def unmeasured_choice(model: nn.Module, why: str, backend: str, arch: str) -> LoweringChoice:
    """The form measured best for ``backend`` on ``arch`` CPUs, for a target that cannot be timed (``why``)."""
    fallback = fallback_form(backend, arch)
    form = fallback.form if fallback.form in candidate_forms(model, backend) else "trained"
    return fixed_choice(model, form, f"not measured ({why}): {form}, {fallback.evidence}")


def cache_key(**facts: object) -> str:
    """A stable name for what a measured choice depends on (architecture, shape, target, runtime)."""
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_choice(key: str) -> dict[str, object] | None:
    """A choice measured earlier for the same key, if its file is intact."""
    try:
        found = json.loads((cache_dir("lowering") / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("form") in LOWERINGS else None


def remember_choice(key: str, choice: LoweringChoice, facts: dict[str, object]) -> None:
    write_json_atomic(cache_dir("lowering") / f"{key}.json",
                      {"form": choice.form, "how": choice.how, "median_ms": choice.median_ms, "facts": facts,
                       "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
