"""The emulated arm64 board end to end: rootfs (built or cached), qemu, RPC, parity.

The end-to-end tests are slow: the first run builds the root filesystem from the
Debian archive and PyPI (about a minute), later runs reuse the cache.

A small cheap-convolution net (depthwise conv, shift by pad + slice) is exported
from PyTorch to ONNX, cross-compiled by TVM for a Raspberry Pi 4 (aarch64,
cortex-a72), run on the emulated board through a local tracker and checked
against onnxruntime on the host. Times under emulation mean nothing and are
only checked to be labelled as emulated.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgedistill.bench import emulated_board, rpc
from toolchain_support import need_emulated_board

CROSS_GCC = "aarch64-linux-gnu-gcc"
RPI4_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}
KEY = "rpi4-emulated"
INPUT_SHAPE = (1, 3, 16, 16)



@pytest.fixture(autouse=True)
def _board_toolchain() -> None:
    need_emulated_board()


def export_cheap_net(path: Path) -> Path:
    """A student-like net: conv, depthwise conv, shift (F.pad + slicing), 1x1 conv, linear."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Shift(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left, down, rest = torch.chunk(x, 3, dim=1)
            left = F.pad(left, (1, 0, 0, 0))[..., :, :-1]
            down = F.pad(down, (0, 0, 0, 1))[..., 1:, :]
            return torch.cat([left, down, rest], dim=1)

    class CheapNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
            self.depthwise = nn.Sequential(
                nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12), nn.ReLU()
            )
            self.shift = Shift()
            self.pointwise = nn.Conv2d(12, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.pointwise(self.shift(self.depthwise(self.stem(x)))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    model = CheapNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, folded by the exporter
        for bn in (model.stem[1], model.depthwise[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(
        model,
        (torch.randn(*INPUT_SHAPE),),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["logits"],
    )
    return path


def compile_for(onnx_path: Path, target: dict, out: Path, cross: str | None) -> Path:
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(onnx_path), shape_dict={"input": list(INPUT_SHAPE)})
    ex = tvm.compile(mod, tvm.target.Target(target))
    ex.export_library(str(out), fcompile=tvm.support.cc.cross_compiler(cross) if cross else None)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("emulated")
    onnx_path = export_cheap_net(work / "cheap.onnx")
    return {
        "onnx": onnx_path,
        "rpi4": compile_for(onnx_path, RPI4_TARGET, work / "cheap.rpi4.so", CROSS_GCC),
        "host": compile_for(onnx_path, {"kind": "llvm"}, work / "cheap.host.so", None),
    }


@pytest.fixture(scope="module")
def board() -> Iterator[tuple[rpc.TrackerProcess, emulated_board.EmulatedBoard]]:
    rootfs = emulated_board.ensure_rootfs()
    with (
        emulated_board.start_tracker(lifetime_s=900) as tracker,
        emulated_board.start_board(*tracker.address, KEY, rootfs=rootfs, lifetime_s=900) as emulated,
    ):
        yield tracker, emulated


@pytest.mark.slow
def test_rootfs_is_cached_and_stamped() -> None:
    rootfs = emulated_board.ensure_rootfs()
    stamp = emulated_board.read_stamp(rootfs)
    assert stamp is not None and emulated_board.is_current(rootfs)
    assert stamp["arch"] == "arm64" and stamp["wheels"]["apache-tvm-ffi"] == "0.1.14.post1"
    assert (rootfs / "usr/bin/python3").exists()
    assert not (rootfs / emulated_board.SITE_DIR / "tvm/lib/libtvm_compiler.so").exists()
    done = subprocess.run(
        [sys.executable, "-m", "edgedistill.bench.emulated_board", "--rootfs", str(rootfs), "build"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "ready" in done.stdout  # cached: no rebuild


@pytest.mark.slow
def test_cross_compiled_cheap_net_matches_onnxruntime_on_the_emulated_board(board, models) -> None:
    tracker, emulated = board
    x = np.random.default_rng(3).standard_normal(INPUT_SHAPE).astype(np.float32)
    expected = ort.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with rpc.request_board(tracker.address, KEY, wait_s=120, session_timeout_s=600) as remote:
        assert remote.address == emulated.address
        info = remote.info()
        model = remote.load(models["rpi4"])
        (out,) = model.run([x])
        timing = model.time([x], warmup_runs=2, warmup_s=0.0, min_runs=5, min_s=0.0, repeats=5)
    assert info["machine"] == "aarch64" and info["emulated"] is True
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
    assert timing.emulated is True and len(timing.repeat_times_s) == 5
    assert all(t > 0 for t in timing.repeat_times_s)


@pytest.mark.slow
def test_module_for_another_target_is_refused_by_the_board(board, models) -> None:
    tracker, _ = board
    with (
        rpc.request_board(tracker.address, KEY, wait_s=120) as remote,
        pytest.raises(rpc.RPCError, match=r"could not load cheap\.host\.so"),
    ):
        remote.load(models["host"])


def test_rootfs_stamp_must_match_the_recipe(tmp_path: Path) -> None:
    assert not emulated_board.is_current(tmp_path)  # no stamp at all
    stamp = emulated_board.recipe()
    (tmp_path / emulated_board.STAMP).write_text(json.dumps(stamp))
    assert emulated_board.is_current(tmp_path)
    stamp["wheels"]["apache-tvm"] = "0.26.0"  # the host moved on: rebuild
    (tmp_path / emulated_board.STAMP).write_text(json.dumps(stamp))
    assert not emulated_board.is_current(tmp_path)


def test_serve_with_an_unreachable_tracker_fails_before_any_build(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgedistill.bench.emulated_board",
            "--rootfs",
            str(tmp_path / "rootfs"),
            "serve",
            "--tracker",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "cannot reach the RPC tracker" in done.stderr
    assert not (tmp_path / "rootfs").exists()
