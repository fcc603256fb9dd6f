"""Opset 18 → 17 for the operators our CNNs use.

The dynamo exporter emits opset ≥ 18, but TensorRT 8.5 (JetPack 5) parses at
most opset 17, and ONNX's version converter has no 18→17 adapter for Pad.
Between 17 and 18 only two of our operators changed: the Reduce* family took
``axes`` from an attribute to an input, and Pad gained an optional ``axes``
input (ReduceSum has taken axes as an input since 13). Everything else our models use (Conv, Gemm, Relu, Add, Slice, Concat,
Reshape, MaxPool, BatchNormalization, ...) is unchanged, so the downgrade is
exact; any other operator that changed in 18 is refused with a clear error.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from edgedistill.errors import EdgeDistillError

_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
_CHANGED_IN_18 = {"Split", "Resize", "ScatterND", "ScatterElements", "Col2Im", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
                  "BitwiseXor", "CenterCropPad", "GroupNormalization", "LpPool", "Mish", "OptionalGetElement", "OptionalHasElement"}


def _constant(model: onnx.ModelProto, name: str) -> list[int] | None:
    for init in model.graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).ravel()]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).ravel()]
    return None


def downgrade_18_to_17(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite an opset-18 graph as opset 17 (in place), or raise naming what cannot be."""
    for node in model.graph.node:
        if node.op_type in _REDUCE and node.op_type != "ReduceSum" and len(node.input) > 1 and node.input[1]:
            axes = _constant(model, node.input[1])
            if axes is None:
                raise EdgeDistillError(f"{node.op_type} '{node.name}' has computed axes; opset 17 needs constant ones",
                                       "use a target that reads opset 18")
            del node.input[1:]
            # noop_with_empty_axes only exists from 18 on; with constant, non-empty axes it changes nothing.
            kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("axes", axes)])
        elif node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
            raise EdgeDistillError(f"Pad '{node.name}' pads selected axes, which opset 17 cannot express",
                                   "use a target that reads opset 18")
        elif node.op_type in _CHANGED_IN_18:
            raise EdgeDistillError(f"operator {node.op_type} changed in opset 18 and cannot be taken back to 17",
                                   "use a target that reads opset 18")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    onnx.checker.check_model(model)
    return model
