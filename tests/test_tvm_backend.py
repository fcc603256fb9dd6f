"""TVM 0.27 compile for x86, aarch64 (cross) and Jetson; parity with onnxruntime; tuning database reuse."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import EdgeDistillError, ToolchainError
from edgedistill.backends.tvm import compile as tvm_backend
from edgedistill.export.targets import host_arch, load_target
from edgedistill.backends.tvm.compile import compile_onnx, run_local
from edgedistill.backends.tvm.tuning import META_FILE, committed_records
from edgedistill.toolchains import cc
from tiny_nets import tiny_onnx
from toolchain_support import need_cross_compiler

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgedistill[tvm]')")

SHAPE = (1, 3, 16, 16)
EM_X86_64, EM_AARCH64 = 62, 183


def shift(x: torch.Tensor) -> torch.Tensor:
    """Four channel groups moved one pixel left/right/up/down: F.pad + slicing + cat, like the cheap convs."""
    c = x.shape[1] // 4
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[2], x.shape[3]
    return torch.cat(
        [
            padded[:, :c, 1 : 1 + h, 0:w],
            padded[:, c : 2 * c, 1 : 1 + h, 2 : 2 + w],
            padded[:, 2 * c : 3 * c, 0:h, 1 : 1 + w],
            padded[:, 3 * c :, 2 : 2 + h, 1 : 1 + w],
        ],
        dim=1,
    )


class CheapNet(nn.Module):
    def __init__(self, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), activation or nn.ReLU())
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.group = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4)
        self.pointwise = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.group(F.relu(self.depthwise(x))))
        x = F.relu(self.pointwise(shift(x)))
        return self.fc(x.mean((2, 3)))


def export(model: nn.Module, path: Path) -> Path:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(SHAPE),), str(path), dynamo=True, input_names=["input"], output_names=["logits"], external_data=False)
    return path


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export(CheapNet(), tmp_path_factory.mktemp("onnx") / "cheap.onnx")


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return int.from_bytes(data[18:20], "little")


def compile_for(onnx_path: Path, target: str, out: Path, **kwargs: object) -> tvm_backend.TvmArtifact:
    return compile_onnx(onnx_path, load_target(target), out, input_name="input", input_shape=SHAPE, **kwargs)


def test_graph_has_the_cheap_conv_ops(onnx_path: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    ops = [n.op_type for n in model.graph.node]
    groups = sorted(a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group")
    assert {"Pad", "Slice", "Concat"} <= set(ops) and groups[-2:] == [4, 16]
    assert not list(onnx_path.parent.glob("*.data"))  # one self-contained file


def test_host_compile_run_parity(onnx_path: Path, sample: np.ndarray, tmp_path: Path) -> None:
    messages: list[str] = []
    artifact = compile_for(onnx_path, "host", tmp_path / "m.tvm.so", progress=messages.append)
    assert artifact.format == "so" and artifact.compiled_for == ["cpu"] and artifact.not_compiled == {}
    assert artifact.gpu_path is None and artifact.tuned_trials == 0 and artifact.compile_seconds > 0
    assert elf_machine(artifact.path.read_bytes()[:20]) == {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}[host_arch()]
    assert any("compiling" in m for m in messages)
    np.testing.assert_allclose(run_local(artifact.path, sample), reference(onnx_path, sample), atol=1e-4, rtol=1e-4)
    entry = artifact.manifest(tmp_path)
    assert entry["path"] == "m.tvm.so" and entry["compiled_for"] == ["cpu"] and entry["target"]["kind"] == "llvm"


def test_aarch64_cross_compile_is_an_aarch64_elf(onnx_path: Path, tmp_path: Path) -> None:
    need_cross_compiler()
    artifact = compile_for(onnx_path, "rpi4", tmp_path / "m.tvm.so")
    assert elf_machine(artifact.path.read_bytes()[:20]) == EM_AARCH64
    assert artifact.target["mcpu"] == "cortex-a72" and artifact.linker.endswith("aarch64-linux-gnu-gcc")


def test_missing_cross_compiler_is_a_toolchain_error(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if host_arch() != "x86_64":
        pytest.skip("simulates an x86 machine without the aarch64 cross compiler")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no compiler of any kind
    start = time.perf_counter()
    with pytest.raises(ToolchainError, match="not found") as info:
        compile_for(onnx_path, "rpi4", tmp_path / "m.tvm.so")
    assert time.perf_counter() - start < 10  # checked before any compiling
    assert "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" in str(info.value)
    assert not (tmp_path / "m.tvm.so").exists()


def test_tar_export_needs_no_cross_compiler(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(cc.shutil, "which", lambda name, *a, **k: None if name.endswith("-gcc") else real_which(name, *a, **k))
    artifact = compile_for(onnx_path, "rpi5", tmp_path / "m.tvm.tar")
    assert artifact.format == "tar" and artifact.linker == ""
    with tarfile.open(artifact.path) as tar:
        objects = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert objects
        assert all(elf_machine(tar.extractfile(m).read(20)) == EM_AARCH64 for m in objects)


def test_host_tar_is_linked_at_load_time(onnx_path: Path, sample: np.ndarray, tmp_path: Path) -> None:
    artifact = compile_for(onnx_path, "host", tmp_path / "m.tvm.tar")
    np.testing.assert_allclose(run_local(artifact.path, sample), reference(onnx_path, sample), atol=1e-4, rtol=1e-4)


def test_jetson_cpu_code_and_cuda_kernels(onnx_path: Path, tmp_path: Path) -> None:
    artifact = compile_for(onnx_path, "jetson", tmp_path / "m.tvm.tar")  # .tar: runs without a cross compiler
    assert artifact.compiled_for == ["cpu"] and artifact.target["mcpu"] == "cortex-a78ae"
    assert artifact.gpu_path == tmp_path / "m.tvm.cuda.tar" and artifact.gpu_path.is_file()
    assert artifact.gpu_target["kind"] == "cuda" and artifact.gpu_target["arch"] == "sm_87"
    assert artifact.gpu_target["host"]["mtriple"] == "aarch64-linux-gnu"
    assert artifact.gpu_kernels > 0
    note = artifact.not_compiled["gpu"]
    assert "sm_87" in note and "CUDA C" in note and "on the device" in note
    with tarfile.open(artifact.gpu_path) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert b"__global__" in blob  # the kernels travel as CUDA source
    assert artifact.manifest(tmp_path)["gpu"]["code"] == "cuda-source"


def test_gpu_failure_is_recorded_and_the_cpu_library_kept(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = tvm_backend._build

    def build(tvm: object, mod: object, target: dict) -> object:
        if target["kind"] == "cuda":
            raise ToolchainError("TVM could not compile for cuda: simulated")
        return real_build(tvm, mod, target)

    monkeypatch.setattr(tvm_backend, "_build", build)
    artifact = compile_for(onnx_path, "jetson-agx-orin", tmp_path / "m.tvm.tar")
    assert artifact.path.is_file() and artifact.compiled_for == ["cpu"]
    assert artifact.gpu_path is None and artifact.not_compiled["gpu"] == "no GPU library: TVM could not compile for cuda: simulated"
    assert not (tmp_path / "m.tvm.cuda.tar").exists()


def test_unsupported_op_names_the_node(tmp_path: Path) -> None:
    path = export(CheapNet(activation=nn.CELU()), tmp_path / "celu.onnx")
    with pytest.raises(ToolchainError, match=r"does not support: Celu \(node .+\)") as info:
        compile_for(path, "host", tmp_path / "m.tvm.so")
    assert "--backend onnxruntime" in str(info.value)


def test_conversion_failure_names_the_node(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMax", ["input"], ["m"], keepdims=0, name="max"),
        helper.make_node("Cast", ["m"], ["mi"], to=TensorProto.INT64, name="cast"),
        helper.make_node("Expand", ["mi", "eight"], ["pads"], name="expand"),
        helper.make_node("Pad", ["input", "pads"], ["out"], name="dynamic_pad"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["a", "b", "c", "d"])],
        initializer=[numpy_helper.from_array(np.array([8], dtype=np.int64), "eight")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "pad.onnx"))
    with pytest.raises(ToolchainError, match="Pad node 'dynamic_pad'") as info:
        compile_for(tmp_path / "pad.onnx", "host", tmp_path / "m.tvm.so")
    assert "--backend onnxruntime" in str(info.value)


def test_bad_arguments(onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="no input 'image'"):
        compile_onnx(onnx_path, load_target("host"), tmp_path / "m.so", input_name="image", input_shape=SHAPE)
    with pytest.raises(ToolchainError, match=r"\*\.so .* or \*\.tar"):
        compile_for(onnx_path, "host", tmp_path / "m.bin")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    for missing_or_corrupt in (tmp_path / "missing.onnx", tmp_path / "junk.onnx"):
        with pytest.raises(EdgeDistillError, match="cannot read ONNX model"):
            compile_for(missing_or_corrupt, "host", tmp_path / "m.so")


def test_tuning_a_foreign_target_is_refused(onnx_path: Path, tmp_path: Path) -> None:
    target = "rpi4" if host_arch() != "aarch64" else "x86-avx2"
    with pytest.raises(ToolchainError, match="cannot tune here"):
        compile_for(onnx_path, target, tmp_path / "m.tvm.tar", tune_trials=8, tuning_dir=tmp_path / "db")
    assert not any((tmp_path / "db").glob("*/" + META_FILE))


def test_foreign_library_does_not_run_here(onnx_path: Path, sample: np.ndarray, tmp_path: Path) -> None:
    if host_arch() == "aarch64":
        pytest.skip("needs an x86 host")
    need_cross_compiler()
    artifact = compile_for(onnx_path, "rpi4", tmp_path / "m.tvm.so")
    with pytest.raises(ToolchainError, match="cannot run"):
        run_local(artifact.path, sample)


def test_missing_tvm_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tvm", None)  # makes `import tvm` raise ImportError
    with pytest.raises(ToolchainError, match=r"pip install 'edgedistill\[tvm\]'"):
        compile_onnx(tmp_path / "m.onnx", load_target("rpi4"), tmp_path / "m.so", input_name="input", input_shape=SHAPE)


@pytest.mark.slow
def test_tuning_writes_a_database_that_the_next_export_reuses(tmp_path: Path, sample: np.ndarray) -> None:
    """A tiny budget (one trial per task, a 3-task net) still runs real MetaSchedule: ~1-2 min on 2 cores."""
    path = tiny_onnx(tmp_path / "tiny.onnx", seed=0)
    messages: list[str] = []
    first = compile_for(path, "host", tmp_path / "a.so", tune_trials=3, tuning_dir=tmp_path / "db", progress=messages.append)
    assert first.tuned_trials == 3 and not first.tuning_reused
    assert (first.tuning_database / META_FILE).is_file()
    assert committed_records(first.tuning_database).stat().st_size > 0  # the committed generation's records
    assert any("3/3 trials measured" in m for m in messages)
    np.testing.assert_allclose(run_local(first.path, sample), reference(path, sample), atol=1e-4, rtol=1e-4)

    path = tiny_onnx(tmp_path / "tiny2.onnx", seed=1)  # other weights, same graph: the kernels and so the database still apply
    start = time.perf_counter()
    second = compile_for(path, "host", tmp_path / "b.so", tune_trials=3, tuning_dir=tmp_path / "db")
    assert second.tuning_reused and second.tuning_database == first.tuning_database
    assert time.perf_counter() - start < 20
    np.testing.assert_allclose(run_local(second.path, sample), reference(path, sample), atol=1e-4, rtol=1e-4)
