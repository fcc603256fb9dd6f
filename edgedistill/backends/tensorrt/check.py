"""Check an ONNX graph against TensorRT's ONNX parser before shipping it.

TensorRT cannot be installed on the export host, so the engine is built on the
device; this check catches, at export time, what would make that build fail:
an opset newer than the device's TensorRT parses, operators its parser lacks,
attribute values it rejects (Pad modes, Resize modes, pooling rank), inputs
that must be build-time constants, dynamic shapes without a profile, INT64
weights on TensorRT 8, and (optionally) DLA limits.

The operator lists are data, transcribed from onnx-tensorrt's
``docs/operators.md`` for each release (8.5 and 10.15 verbatim; 8.6 and 10.3
as the previous list plus the operators its changelog adds). An operator that
a later table supports but the selected one does not list is a warning (not
confirmed for that release), not an error. When the ``tensorrt`` package is
importable (a CUDA workstation), :func:`parse_with_tensorrt` runs the real
parser as well.
"""

from __future__ import annotations

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgedistill.errors import ToolchainError

ERROR = "error"
WARNING = "warning"

_OPS_8_5 = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
    Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
    GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
    Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
    RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
    Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)
_OPS_8_6 = _OPS_8_5 | {"GroupNormalization", "LayerNormalization", "IsInf"}  # 8.6 EA changelog
_OPS_10_3 = _OPS_8_6 | {"Hardmax", "DeformConv"}  # 9.2 and 10.1 changelogs
_OPS_10_15 = _OPS_10_3 | {
    "Attention",
    "BlackmanWindow",
    "CastLike",
    "Gelu",
    "HammingWindow",
    "HannWindow",
    "Mish",
    "RMSNormalization",
    "RotaryEmbedding",
    "STFT",
    "TensorScatter",
}

_INITIALIZER_INPUTS_8 = {"CumSum": (1, "axis"), "Slice": (3, "axes"), "Squeeze": (1, "axes"), "Unsqueeze": (1, "axes"), "TopK": (1, "K")}
_INITIALIZER_INPUTS_10 = {"CumSum": (1, "axis"), "Squeeze": (1, "axes"), "Unsqueeze": (1, "axes"), "TopK": (1, "K")}
_RESIZE = {
    "mode": {"nearest", "linear"},
    "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"},
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
}


@dataclass(frozen=True)
class TensorRTSupport:
    """What one TensorRT release's ONNX parser accepts."""

    version: tuple[int, int]
    max_opset: int
    ops: frozenset[str]
    pad_modes: frozenset[str]
    initializer_inputs: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    native_int64: bool = False

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


SUPPORT: dict[tuple[int, int], TensorRTSupport] = {
    (8, 5): TensorRTSupport((8, 5), 17, _OPS_8_5, frozenset({"constant", "reflect", "edge"}), _INITIALIZER_INPUTS_8),
    (8, 6): TensorRTSupport((8, 6), 17, _OPS_8_6, frozenset({"constant", "reflect", "edge"}), _INITIALIZER_INPUTS_8),
    (10, 3): TensorRTSupport(
        (10, 3), 20, _OPS_10_3, frozenset({"constant", "reflect", "edge", "wrap"}), _INITIALIZER_INPUTS_10, native_int64=True
    ),
    (10, 15): TensorRTSupport(
        (10, 15), 24, _OPS_10_15, frozenset({"constant", "reflect", "edge", "wrap"}), _INITIALIZER_INPUTS_10, native_int64=True
    ),
}
MIN_OPSET = 9
#: every operator some release supports: absent from the chosen table means "not confirmed" (warning)
_ALL_KNOWN = frozenset().union(*(support.ops for support in SUPPORT.values()))

# DLA limits (TensorRT developer guide, "DLA Supported Layers and Restrictions")
_DLA_MAX_KERNEL, _DLA_MAX_STRIDE, _DLA_MAX_CHANNELS = 32, 8, 8192


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        where = f"node '{self.node}' ({self.op}): " if self.node or self.op else ""
        return f"{self.severity}: {where}{self.message}"


def parse_version(text: str) -> tuple[int, int]:
    """'10.3.0.30' -> (10, 3)."""
    parts = str(text).strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ToolchainError(f"bad TensorRT version '{text}'", "write it like 8.5 or 10.3") from None


def support_for(trt_version: str) -> tuple[TensorRTSupport, list[Finding]]:
    """The table for ``trt_version``: the newest known release not newer than it."""
    wanted = parse_version(trt_version)
    older = [key for key in SUPPORT if key <= wanted]
    if not older:
        known = ", ".join(support.name for support in SUPPORT.values())
        raise ToolchainError(f"TensorRT {trt_version} is older than any release this check knows", f"known: {known}")
    key = max(older)
    notes = []
    if key != wanted:
        notes.append(Finding(WARNING, "", "", f"no operator table for TensorRT {trt_version}; using {SUPPORT[key].name}'s"))
    return SUPPORT[key], notes


def tensorrt_version_for_target(target: Mapping[str, Any]) -> str:
    """The TensorRT version a target's TOML states (``tensorrt = "10.3"`` or ``[tensorrt] version = ...``)."""
    for key in ("tensorrt", "tensorrt_version", "trt_version"):
        value = target.get(key)
        if isinstance(value, Mapping):
            value = value.get("version")
        if isinstance(value, (str, int, float)) and str(value):
            return str(value)
    for value in target.values():
        if isinstance(value, Mapping):
            try:
                return tensorrt_version_for_target(value)
            except ToolchainError:
                continue
    raise ToolchainError(
        f"target '{target.get('name', '?')}' does not state its TensorRT version",
        'add tensorrt = { version = "10.3" } to the target TOML',
    )


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_node(
    node: onnx.NodeProto,
    support: TensorRTSupport,
    constants: set[str],
    initializers: Mapping[str, onnx.TensorProto],
    precision: str,
    dla: bool,
) -> Iterable[Finding]:
    op, name = node.op_type, node.name or node.output[0]
    if node.domain not in ("", "ai.onnx"):
        yield Finding(ERROR, name, op, f"custom operator of domain '{node.domain}': TensorRT needs a plugin for it")
        return
    if op not in support.ops:
        if op in _ALL_KNOWN:
            yield Finding(WARNING, name, op, f"supported by later TensorRT releases, not confirmed for {support.name}")
        else:
            yield Finding(ERROR, name, op, f"not supported by TensorRT {support.name}'s ONNX parser")
        return
    if op in support.initializer_inputs:
        index, what = support.initializer_inputs[op]
        if len(node.input) > index and node.input[index] and node.input[index] not in constants:
            yield Finding(ERROR, name, op, f"input '{what}' must be a constant (initializer) for TensorRT {support.name}")
    if op == "Pad":
        mode = _text(_attr(node, "mode", b"constant"))
        if mode not in support.pad_modes:
            yield Finding(ERROR, name, op, f"Pad mode '{mode}' is not supported (TensorRT {support.name}: {', '.join(sorted(support.pad_modes))})")
    if op == "Resize":
        for attribute, allowed in _RESIZE.items():
            value = _attr(node, attribute)
            if value is not None and _text(value) not in allowed:
                yield Finding(ERROR, name, op, f"Resize {attribute} '{_text(value)}' is not supported")
    if op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            yield Finding(ERROR, name, op, f"{len(kernel)}D pooling: TensorRT pools in 2D or 3D only")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield Finding(ERROR, name, op, "the Indices output of MaxPool is not supported")
    if op == "Conv":
        yield from _check_conv(node, name, initializers, precision, dla)
    if dla and op == "ConvTranspose" and (int(_attr(node, "group", 1)) > 1 or any(d != 1 for d in _attr(node, "dilations", []))):
        yield Finding(WARNING, name, op, "grouped or dilated deconvolution cannot run on DLA: it falls back to the GPU")


def _check_conv(
    node: onnx.NodeProto, name: str, initializers: Mapping[str, onnx.TensorProto], precision: str, dla: bool
) -> Iterable[Finding]:
    """Group/depthwise convolutions are supported; INT8 and DLA add limits."""
    groups = int(_attr(node, "group", 1))
    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return
    out_channels, in_per_group = int(weight.dims[0]), int(weight.dims[1])
    kernel = [int(d) for d in weight.dims[2:]]
    if groups > 1 and precision == "int8" and (in_per_group % 4 or (out_channels // groups) % 4):
        yield Finding(
            WARNING,
            name,
            "Conv",
            f"grouped conv with {in_per_group} input channel(s) per group: TensorRT's INT8 group kernels need multiples of 4,"
            " so this layer may run in FP16/FP32",
        )
    if not dla:
        return
    strides = [int(s) for s in _attr(node, "strides", [1] * len(kernel))]
    reasons = []
    if len(kernel) != 2:
        reasons.append(f"{len(kernel)}D convolution")
    if any(k > _DLA_MAX_KERNEL for k in kernel):
        reasons.append(f"kernel {kernel} > {_DLA_MAX_KERNEL}")
    if any(s > _DLA_MAX_STRIDE for s in strides):
        reasons.append(f"stride {strides} > {_DLA_MAX_STRIDE}")
    if out_channels > _DLA_MAX_CHANNELS:
        reasons.append(f"{out_channels} output channels > {_DLA_MAX_CHANNELS}")
    if reasons:
        yield Finding(WARNING, name, "Conv", "cannot run on DLA (" + "; ".join(reasons) + "): it falls back to the GPU")


def _dynamic_inputs(graph: onnx.GraphProto, initializers: Mapping[str, Any]) -> Iterable[tuple[str, list[Any]]]:
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if any(isinstance(d, str) or d <= 0 for d in dims):
            yield value.name, dims


def check_tensorrt_graph(
    model: onnx.ModelProto | str | Path, trt_version: str, precision: str = "fp16", dla: bool = False
) -> list[Finding]:
    """All findings for ``model`` against TensorRT ``trt_version`` (errors first)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    support, findings = support_for(trt_version)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > support.max_opset:
        findings.append(
            Finding(ERROR, "", "", f"opset {opset} is newer than TensorRT {support.name} parses (max {support.max_opset}): export with opset <= {support.max_opset}")
        )
    elif opset is not None and opset < MIN_OPSET:
        findings.append(Finding(WARNING, "", "", f"opset {opset} is older than TensorRT's backward support (>= {MIN_OPSET})"))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    constants = set(initializers) | {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    for name, dims in _dynamic_inputs(graph, initializers):
        severity = ERROR if dla else WARNING
        findings.append(
            Finding(severity, name, "input", f"dynamic shape {dims}: the build needs an optimisation profile (DLA needs static shapes)")
        )
    if dla and precision == "fp32":
        findings.append(Finding(ERROR, "", "", "DLA runs FP16 or INT8 only, not FP32"))
    for node in graph.node:
        findings.extend(_check_node(node, support, constants, initializers, precision, dla))
    if not support.native_int64:
        int64 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT64]
        if int64:
            findings.append(
                Finding(WARNING, "", "", f"{len(int64)} INT64 initializer(s): TensorRT {support.name} casts them to INT32, clamping out-of-range values")
            )
    doubles = [t for t in graph.initializer if t.data_type == onnx.TensorProto.DOUBLE]
    if doubles:
        findings.append(Finding(WARNING, "", "", f"{len(doubles)} DOUBLE initializer(s): TensorRT casts them to FLOAT"))
    return sorted(findings, key=lambda finding: finding.severity != ERROR)


def parse_with_tensorrt(model_path: str | Path) -> list[Finding] | None:
    """Run the real TensorRT ONNX parser when ``tensorrt`` is importable; None otherwise."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        return None
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".", 1)[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(model_path)):
        return []
    findings = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = error.node_name() if hasattr(error, "node_name") else str(error.node())
        op = error.node_operator() if hasattr(error, "node_operator") else ""
        findings.append(Finding(ERROR, node, op, f"TensorRT {trt.__version__} parser: {error.desc()}"))
    return findings


def assert_tensorrt_compatible(
    model: str | Path | onnx.ModelProto, trt_version: str, precision: str = "fp16", dla: bool = False
) -> list[Finding]:
    """Raise ToolchainError listing every error; return the warnings."""
    findings = check_tensorrt_graph(model, trt_version, precision, dla)
    if not isinstance(model, onnx.ModelProto):
        findings += parse_with_tensorrt(model) or []
    errors = [finding for finding in findings if finding.severity == ERROR]
    if errors:
        listed = "; ".join(str(error) for error in errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise ToolchainError(
            f"the model will not build with TensorRT {trt_version}: {listed}",
            "change the export (opset, operators) or the target's TensorRT version",
        )
    return [finding for finding in findings if finding.severity != ERROR]
