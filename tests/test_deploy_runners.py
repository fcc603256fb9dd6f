"""deploy.backends: onnxruntime and the TVM runtime agree on the same model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from test_deploy_helpers import CLASSES, INPUT_SHAPE, compile_tvm, export_cnn

from deploy.errors import DeployError
from deploy.backends import open_runner


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("runners")
    onnx_path = export_cnn(root / "m.onnx", width=8, depthwise=True)
    return onnx_path, compile_tvm(onnx_path, root / "m.so")


def _inputs(count: int = 3):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(INPUT_SHAPE).astype(np.float32) for _ in range(count)]


def test_onnxruntime_and_tvm_runtime_agree(models):
    onnx_path, library = models
    ort_runner = open_runner("onnxruntime", onnx_path, threads=1)
    tvm_runner = open_runner("tvm", library, threads=1)
    for x in _inputs():
        expected = ort_runner.run(x)
        got = tvm_runner.run(x)
        assert expected.shape == got.shape == (1, CLASSES)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert tvm_runner.threads == 1 and ort_runner.threads == 1


def test_arena_switch_does_not_change_results(models):
    onnx_path, _ = models
    x = _inputs(1)[0]
    on = open_runner("onnxruntime", onnx_path, threads=1, arena=True)
    off = open_runner("onnxruntime", onnx_path, threads=1, arena=False)
    assert on.arena and not off.arena
    np.testing.assert_array_equal(on.run(x), off.run(x))


def test_tvm_thread_pool_follows_the_requested_count(models):
    _, library = models
    # a fresh process: TVM's pool is process-wide
    code = (
        "from deploy.backends import open_runner; "
        f"r = open_runner('tvm', {str(library)!r}, threads=2, runtime_only=True); "
        "print(r.threads)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "2"


def test_bad_inputs_give_deploy_errors(tmp_path, models):
    onnx_path, _ = models
    with pytest.raises(DeployError, match="does not exist"):
        open_runner("onnxruntime", tmp_path / "absent.onnx", threads=1)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DeployError, match="onnxruntime cannot load broken.onnx"):
        open_runner("onnxruntime", broken, threads=1)
    with pytest.raises(DeployError, match="unknown backend"):
        open_runner("openvino", onnx_path, threads=1)


def test_missing_runtime_is_one_clear_line(models):
    onnx_path, _ = models
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from deploy.errors import DeployError\nfrom deploy.backends import open_runner\n"
        f"try:\n    open_runner('onnxruntime', {str(onnx_path)!r}, 1)\n"
        "except DeployError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "onnxruntime is not installed (pip install onnxruntime)"


def test_tvm_runner_leaves_the_process_cpu_affinity_alone(models):
    """TVM's thread pool pins its calling thread; the runner must not leave the whole process on one core."""
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = set(range(os.cpu_count() or 1)) & os.sched_getaffinity(os.getppid())  # what pytest's parent allows
    os.sched_setaffinity(0, before)
    open_runner("tvm", models[1], threads=1)
    assert os.sched_getaffinity(0) == before
