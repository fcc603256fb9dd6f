"""deploy.memory: weight bytes without onnx, and peak RSS in a fresh process."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_deploy_helpers import INPUT_SHAPE, compile_tvm, export_cnn

from deploy.errors import DeployError
from deploy.memory import memory_figures, probe_peak_rss
from deploy.onnx_weights import weight_bytes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    small = export_cnn(root / "small.onnx", width=8)
    large = export_cnn(root / "large.onnx", width=256)
    return small, large, compile_tvm(small, root / "small.so")


def _onnx_initializer_bytes(path) -> int:
    model = onnx.load(str(path))
    return int(
        sum(np.prod(t.dims, dtype=np.int64) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize for t in model.graph.initializer)
    )


def test_weight_bytes_match_the_onnx_package(models, tmp_path):
    small, large, _ = models
    assert weight_bytes(small) == _onnx_initializer_bytes(small) > 0
    assert weight_bytes(large) == _onnx_initializer_bytes(large) > weight_bytes(small)
    # mixed dtypes, packed and scalar dims, fp16 and int64
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[
            helper.make_tensor("a", TensorProto.FLOAT16, [3, 5], np.zeros(15, np.float16).tobytes(), raw=True),
            helper.make_tensor("b", TensorProto.INT64, [7], list(range(7))),
            helper.make_tensor("c", TensorProto.DOUBLE, [], [1.0]),
        ],
    )
    path = tmp_path / "mixed.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert weight_bytes(path) == 3 * 5 * 2 + 7 * 8 + 8 == _onnx_initializer_bytes(path)


def test_weight_bytes_of_a_non_model_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff" * 10)
    with pytest.raises(DeployError, match="cannot read the weights of junk.onnx"):
        weight_bytes(path)


def test_onnxruntime_probe_arena_on_and_off(models):
    small, large, _ = models
    off = probe_peak_rss("onnxruntime", large, INPUT_SHAPE, threads=1, runs=3, arena=False)
    on = probe_peak_rss("onnxruntime", large, INPUT_SHAPE, threads=1, runs=3, arena=True)
    for figure in (off, on):
        assert figure["peak_rss_delta_bytes"] > 0
        assert figure["peak_rss_bytes"] >= figure["baseline_rss_bytes"] > 0
        assert figure["torch_imported"] is False
    assert off["arena"] == "off" and on["arena"] == "on"
    # the large model's weights (~2.4 MB) must show up in its peak
    assert off["peak_rss_delta_bytes"] >= weight_bytes(large)


def test_tvm_probe_and_the_schema_memory_object(models):
    small, _, library = models
    tvm = probe_peak_rss("tvm", library, INPUT_SHAPE, threads=1, runs=3)
    assert tvm["peak_rss_delta_bytes"] > 0 and tvm["arena"] is None and tvm["torch_imported"] is False
    figures = memory_figures("onnxruntime", small, small, INPUT_SHAPE, threads=1, runs=2)
    assert figures["arena"] == "off"
    assert figures["file_bytes"] == small.stat().st_size
    assert figures["weight_bytes"] == weight_bytes(small)
    assert figures["peak_rss_delta_bytes"] > 0 and figures["peak_rss_delta_bytes_arena_on"] > 0


def test_probe_failure_is_reported(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"nope")
    with pytest.raises(DeployError, match="memory probe of broken.onnx failed: onnxruntime cannot load"):
        probe_peak_rss("onnxruntime", broken, INPUT_SHAPE, threads=1, runs=1)


def test_fallback_without_proc_uses_getrusage(models, monkeypatch):
    """macOS has no /proc: the probe falls back to ru_maxrss and says so."""
    import argparse

    from deploy import memory_probe

    monkeypatch.setattr(memory_probe, "_STATUS", "/nonexistent/status")
    small, _, _ = models
    args = argparse.Namespace(
        backend="onnxruntime", model=str(small), shape="1,3,16,16", dtype="float32", threads=1, runs=2, arena="off", runtime_only=False
    )
    figures = memory_probe.probe(args)
    assert "no /proc" in figures["method"]
    assert figures["peak_rss_bytes"] >= figures["baseline_rss_bytes"] > 0
    assert figures["peak_rss_delta_bytes"] >= 0
