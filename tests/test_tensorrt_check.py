"""The host-side TensorRT graph check on real exported graphs and on graphs
built to break one rule each."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_deploy_helpers import export_cnn

from edgedistill.errors import ToolchainError
from edgedistill.backends.tensorrt.check import (
    ERROR,
    WARNING,
    assert_tensorrt_compatible,
    check_tensorrt_graph,
    parse_with_tensorrt,
    support_for,
    tensorrt_version_for_target,
)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return export_cnn(tmp_path_factory.mktemp("trt") / "cnn.onnx", width=8, depthwise=True)


def graph(nodes, opset=17, inputs=None, initializers=(), domain_opsets=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    outputs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domain_opsets)]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers)), opset_imports=opsets)


def errors(findings):
    return [f for f in findings if f.severity == ERROR]


@pytest.mark.parametrize("version", ["8.5", "8.6.2", "10.3", "10.3.0.30"])
def test_exported_cnn_with_depthwise_conv_passes(cnn, version):
    assert errors(check_tensorrt_graph(cnn, version)) == []
    assert all(f.severity == WARNING for f in assert_tensorrt_compatible(cnn, version))


def test_too_new_opset_fails_on_jetpack5_not_on_jetpack6():
    model = graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], opset=20)
    (error,) = errors(check_tensorrt_graph(model, "8.5"))
    assert "opset 20" in error.message and "<= 17" in error.message
    assert errors(check_tensorrt_graph(model, "10.3")) == []
    with pytest.raises(ToolchainError, match="will not build with TensorRT 8.5: error: opset 20"):
        assert_tensorrt_compatible(model, "8.5")


def test_unsupported_custom_and_unconfirmed_operators():
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="uniq"),
        helper.make_node("FusedThing", ["x"], ["f"], name="fused", domain="com.example"),
        helper.make_node("Gelu", ["x"], ["y"], name="gelu"),
    ]
    findings = check_tensorrt_graph(graph(nodes, opset=20, domain_opsets=["com.example"]), "10.3")
    by_node = {f.node: f for f in findings}
    assert by_node["uniq"].severity == ERROR and "not supported by TensorRT 10.3" in by_node["uniq"].message
    assert by_node["fused"].severity == ERROR and "plugin" in by_node["fused"].message
    assert by_node["gelu"].severity == WARNING and "not confirmed for 10.3" in by_node["gelu"].message
    assert findings[0].severity == ERROR  # errors come first
    newer = check_tensorrt_graph(graph(nodes[2:], opset=20), "10.15")
    assert newer == []


def test_pad_modes_differ_between_releases():
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    model = graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="wrap")], opset=19, initializers=[pads])
    found = errors(check_tensorrt_graph(model, "8.6"))  # wrap came with opset 19, past 8.6's 17
    assert any(f.node == "pad" and "Pad mode 'wrap'" in f.message for f in found)
    assert any("opset 19" in f.message for f in found)
    assert errors(check_tensorrt_graph(model, "10.3")) == []
    # INT64 weights: cast down on TensorRT 8, native on 10
    assert any("INT64" in f.message for f in check_tensorrt_graph(model, "8.6"))
    assert not any("INT64" in f.message for f in check_tensorrt_graph(model, "10.3"))


def test_inputs_that_must_be_constants():
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [4])
    axes_input = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    model = graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")],
        inputs=[x, axes_input],
        initializers=[starts, ends],
    )
    (error,) = errors(check_tensorrt_graph(model, "8.5"))
    assert "'axes' must be a constant" in error.message
    assert errors(check_tensorrt_graph(model, "10.3")) == []  # tensor axes since 10.3


def test_pooling_resize_and_dynamic_shapes():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], name="pool_idx", kernel_shape=[2, 2]),
        helper.make_node("MaxPool", ["p"], ["p1"], name="pool_1d", kernel_shape=[2]),
        helper.make_node("Resize", ["p1", "", "scales"], ["y"], name="resize", mode="cubic"),
    ]
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    dynamic = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])]
    findings = check_tensorrt_graph(graph(nodes, inputs=dynamic, initializers=[scales]), "10.3")
    messages = {(f.node, f.severity): f.message for f in findings}
    assert "Indices output" in messages[("pool_idx", ERROR)]
    assert "1D pooling" in messages[("pool_1d", ERROR)]
    assert "mode 'cubic'" in messages[("resize", ERROR)]
    assert "optimisation profile" in messages[("x", WARNING)]


def test_dla_and_int8_notes_for_grouped_convolution():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 33, 33], np.zeros(4 * 33 * 33, np.float32))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=4, pads=[16, 16, 16, 16])
    model = graph([conv], initializers=[weight])
    assert check_tensorrt_graph(model, "10.3", precision="fp16") == []  # depthwise is fine on the GPU
    int8 = check_tensorrt_graph(model, "10.3", precision="int8")
    assert [f.severity for f in int8] == [WARNING] and "multiples of 4" in int8[0].message
    dla = check_tensorrt_graph(model, "10.3", precision="fp16", dla=True)
    assert any(f.node == "dw" and "cannot run on DLA" in f.message and "kernel [33, 33]" in f.message for f in dla)
    dla_fp32 = errors(check_tensorrt_graph(model, "10.3", precision="fp32", dla=True))
    assert any("DLA runs FP16 or INT8 only" in f.message for f in dla_fp32)


def test_versions_and_targets():
    assert support_for("10.7")[0].name == "10.3" and "no operator table" in support_for("10.7")[1][0].message
    assert support_for("8.5.2")[1] == []
    with pytest.raises(ToolchainError, match="older than any release"):
        support_for("7.1")
    with pytest.raises(ToolchainError, match="bad TensorRT version"):
        support_for("ten")
    assert tensorrt_version_for_target({"name": "jetson-orin-nano", "tensorrt": {"version": "10.3"}}) == "10.3"
    assert tensorrt_version_for_target({"name": "j", "device": {"tensorrt_version": "8.5.2"}}) == "8.5.2"
    with pytest.raises(ToolchainError, match="does not state its TensorRT version"):
        tensorrt_version_for_target({"name": "rpi4"})


def test_real_parser_runs_only_where_tensorrt_is_installed(cnn):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert parse_with_tensorrt(cnn) is None
    else:
        assert parse_with_tensorrt(cnn) == []
