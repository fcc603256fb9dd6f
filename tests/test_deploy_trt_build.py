"""deploy.trt_build without TensorRT: calibration batching, the trtexec command
line, version parsing, and the trtexec fallback driven by a stand-in binary."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_deploy_helpers import INPUT_SHAPE, export_cnn

from deploy.errors import DeployError
from deploy.trt_build import (
    build_engine,
    calibration_batches,
    decode_trt_version,
    engine_record_path,
    load_calibration,
    parse_nv_tegra_release,
    trtexec_command,
    versions_record,
)


def test_batches_are_contiguous_float32_slices_of_the_engine_batch():
    data = np.random.default_rng(0).standard_normal((10, 3, 16, 16))  # float64, as a careless export might save
    batches = calibration_batches(data, (1, 3, 16, 16))
    assert len(batches) == 10
    for i, batch in enumerate(batches):
        assert batch.shape == (1, 3, 16, 16) and batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(batch, data[i : i + 1].astype(np.float32))
    fours = calibration_batches(data.astype(np.float32), (4, 3, 16, 16))
    assert [b.shape[0] for b in fours] == [4, 4]  # the partial batch of 2 is dropped, not padded
    assert len(calibration_batches(data, (1, 3, 16, 16), max_batches=3)) == 3
    transposed = np.ascontiguousarray(data.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # a non-contiguous view
    assert all(b.flags["C_CONTIGUOUS"] for b in calibration_batches(transposed, (2, 3, 16, 16)))


def test_batches_refuse_wrong_shapes_and_too_few_samples():
    with pytest.raises(DeployError, match=r"expected \(N, 3, 16, 16\)"):
        calibration_batches(np.zeros((5, 3, 32, 32), np.float32), (1, 3, 16, 16))
    with pytest.raises(DeployError, match="fewer than one batch of 8"):
        calibration_batches(np.zeros((5, 3, 16, 16), np.float32), (8, 3, 16, 16))


def test_calibration_file_loading(tmp_path):
    good = tmp_path / "calibration.npy"
    np.save(good, np.ones((4, 3, 16, 16), np.float32))
    assert load_calibration(good).shape == (4, 3, 16, 16)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DeployError, match="cannot read calibration data"):
        load_calibration(pickled)


def test_trtexec_command_lines(tmp_path):
    base = dict(onnx_path=Path("m.onnx"), engine_path=Path("m.engine"), timing_cache=Path("t.cache"), workspace_mb=512)
    fp16 = trtexec_command("trtexec", precision="fp16", **base)
    assert fp16[0] == "trtexec"
    assert {"--onnx=m.onnx", "--saveEngine=m.engine", "--timingCacheFile=t.cache", "--memPoolSize=workspace:512", "--fp16"} <= set(fp16)
    fp32 = trtexec_command("trtexec", precision="fp32", **base)
    assert "--fp16" not in fp32 and "--int8" not in fp32
    with pytest.raises(DeployError, match="INT8 with trtexec needs a calibration cache"):
        trtexec_command("trtexec", precision="int8", **base)
    cache = tmp_path / "m.calib"
    cache.write_bytes(b"cache")
    int8 = trtexec_command("trtexec", precision="int8", calibration_cache=cache, **base)
    assert "--int8" in int8 and f"--calib={cache}" in int8 and "--fp16" in int8
    with pytest.raises(DeployError, match="unknown precision 'bf8'"):
        trtexec_command("trtexec", precision="bf8", **base)


def test_version_parsing():
    jp6 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024"
    assert parse_nv_tegra_release(jp6) == "36.3.0"
    assert parse_nv_tegra_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == "35.4.1"
    assert parse_nv_tegra_release("garbage") is None
    assert decode_trt_version(8502) == "8.5.2"
    assert decode_trt_version(8601) == "8.6.1"
    assert decode_trt_version(100300) == "10.3.0"


def test_without_tensorrt_or_trtexec_the_build_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    onnx_path = export_cnn(tmp_path / "m.onnx")
    with pytest.raises(DeployError, match="neither the TensorRT Python API nor trtexec"):
        build_engine(onnx_path, tmp_path / "m.fp16.engine", "fp16", INPUT_SHAPE, tmp_path / "t.cache")
    assert not (tmp_path / "m.fp16.engine").exists()
    record = versions_record()
    assert record["tensorrt"] is None and record["jetpack"] is None


def _fake_trtexec(directory: Path, fail: bool = False) -> Path:
    """A stand-in for NVIDIA's binary: logs its version banner and writes --saveEngine."""
    script = directory / "trtexec"
    script.write_text(
        "#!/bin/sh\n"
        'echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"\n'
        + ("echo 'Error: unsupported operator' >&2; exit 1\n" if fail else "")
        + 'for arg in "$@"; do case "$arg" in --saveEngine=*) printf engine > "${arg#--saveEngine=}";; '
        '--timingCacheFile=*) printf cache > "${arg#--timingCacheFile=}";; esac; done\n'
        f'echo "$*" > "{directory}/args"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_trtexec_fallback_builds_atomically_and_records_versions(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_trtexec(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    onnx_path = export_cnn(tmp_path / "m.onnx")
    engine = tmp_path / "models" / "m.fp16.engine"
    record = build_engine(onnx_path, engine, "fp16", INPUT_SHAPE, tmp_path / "models" / "t.cache", workspace_mb=256)
    assert engine.read_bytes() == b"engine"
    assert record["builder"] == "trtexec" and record["precision_built"] == "fp16"
    assert record["versions"]["tensorrt"] == "10.3.0"
    assert json.loads(engine_record_path(engine).read_text()) == record
    args = (bin_dir / "args").read_text()
    assert "--fp16" in args and "--memPoolSize=workspace:256" in args and f"--onnx={onnx_path}" in args
    assert [p.name for p in engine.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_trtexec_failure_leaves_no_engine(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_trtexec(bin_dir, fail=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    onnx_path = export_cnn(tmp_path / "m.onnx")
    engine = tmp_path / "m.fp16.engine"
    with pytest.raises(DeployError, match="trtexec failed to build m.fp16.engine: Error: unsupported operator"):
        build_engine(onnx_path, engine, "fp16", INPUT_SHAPE, tmp_path / "t.cache", use_trtexec=True)
    assert list(tmp_path.glob("*engine*")) == []


def test_cuda_runtime_wrapper():
    """Missing libcudart is one clear error; where it exists, calls are checked."""
    from deploy.cudart import CudaRuntime, load_library

    with pytest.raises(DeployError, match="libcudart"):
        load_library(["/nonexistent/libcudart.so.12"])
    try:
        cuda = CudaRuntime()
    except DeployError:
        pytest.skip("no libcudart on this machine (it comes with the CUDA toolkit / JetPack)")
    assert cuda.runtime_version().count(".") == 1
    try:
        pointer = cuda.malloc(64)
    except DeployError as exc:  # a CUDA library without a usable GPU
        assert "cudaMalloc failed" in str(exc)
    else:
        data = np.arange(16, dtype=np.float32)
        back = np.empty_like(data)
        stream = cuda.stream_create()
        cuda.to_device(pointer, data, stream)
        cuda.to_host(back, pointer, stream)
        cuda.synchronize(stream)
        np.testing.assert_array_equal(back, data)
        cuda.free(pointer)
        cuda.stream_destroy(stream)
