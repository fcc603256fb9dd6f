"""Target TOML files: every shipped one loads, aliases, suggestions, user files, clear errors."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import platform
import re
from pathlib import Path

import pytest

from edgedistill.errors import EdgeDistillError, UnknownNameError
from edgedistill.export import targets as targets_module
from deploy.env import usable_cores
from edgedistill.backends import backend_names
from edgedistill.export.targets import host_arch, host_can_run, list_targets, load_target
from edgedistill.backends.tensorrt.check import tensorrt_version_for_target

SHIPPED = {"host", "x86-avx2", "x86-avx512", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"}
RPI4 = importlib.resources.files("edgedistill.target_files").joinpath("rpi4.toml").read_text("utf-8")


def test_every_shipped_target_loads_and_is_complete() -> None:
    loaded = {t.name: t for t in list_targets()}
    assert SHIPPED <= set(loaded)
    for name, target in loaded.items():
        assert Path(target.source).stem == name
        assert target.description and "\n" not in target.description
        assert target.backends and set(target.backends) <= set(backend_names())
        assert target.threads >= 1 and 7 <= target.onnx_opset <= 23
        assert target.tvm_cpu_target["kind"] == "llvm"
        assert target.tvm_cpu_target["mtriple"].startswith(target.arch)
        assert target.raw["name"] == name
        json.dumps(target.raw)  # goes into manifest.json as is
        if target.arch != host_arch():
            assert target.cross_compiler == f"{target.arch}-linux-gnu-gcc"
        if "tensorrt" in target.backends:
            assert re.fullmatch(r"\d+\.\d+", tensorrt_version_for_target(target.raw))


def test_names_and_aliases_are_unique() -> None:
    seen: list[str] = []
    for target in list_targets():
        seen += [target.name.lower(), *(a.lower() for a in target.aliases)]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("jetson", "jetson-orin-nano"), ("JETSON", "jetson-orin-nano"), ("pi4", "rpi4"), ("xavier", "jetson-xavier-nx"), ("avx512", "x86-avx512")],
)
def test_aliases(name: str, expected: str) -> None:
    assert load_target(name).name == expected


def test_jetson_targets_are_cuda_with_their_own_cpu() -> None:
    # TVM's nvidia/jetson-orin-nano tag says "carmel" (Xavier's core); Orin has Cortex-A78AE.
    for name, arch, mcpu in [("jetson-orin-nano", "sm_87", "cortex-a78ae"), ("jetson-agx-orin", "sm_87", "cortex-a78ae"), ("jetson-xavier-nx", "sm_72", "carmel")]:
        target = load_target(name)
        assert target.device == "gpu" and target.default_backend == "tensorrt"
        assert target.tvm_gpu_target["kind"] == "cuda" and target.tvm_gpu_target["arch"] == arch
        assert target.tvm_cpu_target == target.tvm_target["host"] and target.tvm_cpu_target["mcpu"] == mcpu
        assert {"python", "cuda", "jetpack"} <= set(target.software)
    assert load_target("jetson-orin-nano").software["python"] == "3.10"


def test_cpu_targets_have_no_gpu() -> None:
    for name in ("rpi4", "rpi5", "x86-avx2", "x86-avx512", "host"):
        target = load_target(name)
        assert target.device == "cpu" and target.tvm_gpu_target is None and target.tvm_cpu_target == target.tvm_target


def test_unknown_target_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'jetson-orin-nano'"):
        load_target("jetson-orin-nan")


def test_host_is_detected() -> None:
    host = load_target("host")
    assert host.arch == host_arch() and host.threads == usable_cores() <= (os.cpu_count() or 1)
    assert host.cross_compiler is None and host_can_run(host) == (True, "")
    if importlib.util.find_spec("tvm") is not None:
        from tvm.target import codegen

        assert host.tvm_target["mcpu"] == codegen.llvm_get_system_cpu()


def test_host_without_tvm_falls_back_to_a_generic_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(targets_module.importlib.util, "find_spec", lambda name, *a: None if name == "tvm" else real_find_spec(name, *a))
    targets_module._host_llvm_cpu.cache_clear()
    try:
        data = targets_module._read_toml(importlib.resources.files("edgedistill.target_files").joinpath("host.toml").read_text("utf-8"), "host.toml")
        host = targets_module.parse_target(data, "host.toml")
    finally:
        targets_module._host_llvm_cpu.cache_clear()
    expected = {"x86_64": "x86-64", "aarch64": "generic"}.get(host_arch(), "generic")
    assert host.tvm_target["mcpu"] == expected
    assert host.tvm_target["mtriple"] == f"{host_arch()}-linux-gnu"


def test_foreign_arch_cannot_run_here() -> None:
    other = "rpi4" if platform.machine() in ("x86_64", "AMD64") else "x86-avx2"
    ok, why = host_can_run(load_target(other))
    assert not ok and "this machine is" in why


def test_user_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "my-board.toml"
    path.write_text(RPI4.replace('name = "rpi4"', 'name = "my-board"').replace('aliases = ["pi4", "raspberry-pi-4"]', ""), "utf-8")
    target = load_target(str(path))
    assert target.name == "my-board" and target.source == str(path)
    assert target.tvm_target["mcpu"] == "cortex-a72"


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(EdgeDistillError, match="not found"):
        load_target(str(tmp_path / "nope.toml"))


def test_malformed_toml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nthreads = [4\n', "utf-8")
    with pytest.raises(EdgeDistillError, match=r"broken\.toml: not valid TOML"):
        load_target(str(path))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('device = "cpu"', "", "missing 'device'"),
        ("threads = 4", "threds = 4", "unknown key 'threds'.*did you mean 'threads'"),
        ('device = "cpu"', 'device = "tpu"', r"device = 'tpu' is not valid"),
        ('precision = "fp32"', 'precision = "fp8"', "precision = 'fp8' is not valid"),
        ("onnx_opset = 18", "onnx_opset = 99", "onnx_opset = 99 is not valid"),
        ("onnx_opset = 18", 'onnx_opset = "18"', "onnx_opset = '18' is not valid"),
        ('backends = ["tvm", "onnxruntime"]', 'backends = ["tflite"]', "backends = \\['tflite'\\] is not valid"),
        ('backends = ["tvm", "onnxruntime"]', 'backends = ["tensorrt"]', r"needs a \[tensorrt\] table"),
        ('mtriple = "aarch64-linux-gnu"', 'mtriple = "x86_64-linux-gnu"', "mtriple for aarch64"),
        ('mcpu = "cortex-a72"', "", "no mcpu"),
        ('kind = "llvm"', 'kind = "opencl"', "kind = 'opencl' is not supported"),
        ('device = "cpu"', 'device = "gpu"', "needs a cuda TVM target"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in RPI4
    path = tmp_path / "bad.toml"
    path.write_text(RPI4.replace(old, new, 1), "utf-8")
    with pytest.raises(EdgeDistillError, match=message) as info:
        load_target(str(path))
    assert str(path) in str(info.value)


def test_a_table_written_as_a_value_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "flat.toml"
    path.write_text('software = "3.11"\n' + RPI4.split("[software]")[0], "utf-8")
    with pytest.raises(EdgeDistillError, match="'software' must be a table"):
        load_target(str(path))


def test_cuda_target_needs_a_host(tmp_path: Path) -> None:
    text = importlib.resources.files("edgedistill.target_files").joinpath("jetson-orin-nano.toml").read_text("utf-8")
    path = tmp_path / "no-host.toml"
    path.write_text(text.split("[tvm.target.host]")[0] + "\n[tensorrt]\nversion = \"10.3\"\n", "utf-8")
    with pytest.raises(EdgeDistillError, match=r"\[tvm.target.host\]"):
        load_target(str(path))
