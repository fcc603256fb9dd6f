"""The whole chain on an emulated Raspberry Pi 4: train → export for rpi4 → bench through a TVM RPC tracker.

The student and teacher are cross-compiled for Cortex-A72, uploaded to the
emulated arm64 board (qemu-user, see edgedistill.bench.emulated_board), and
their outputs checked against onnxruntime on the host by ``edgedistill bench``
itself. Times under emulation mean nothing: the test checks they are labelled so.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedistill.bench import emulated_board
from edgedistill.cli import main
from edgedistill.errors import ToolchainError
from toolchain_support import need_emulated_board


@pytest.mark.slow
def test_rpi4_bundle_runs_on_the_emulated_board_and_matches_onnxruntime(mutual_run: Path, tmp_path: Path) -> None:
    need_emulated_board()
    result = CliRunner().invoke(main, ["export", str(mutual_run), "--target", "rpi4", "--out", str(tmp_path / "pi"), "--parity-samples", "4"])
    assert result.exit_code == 0, result.output
    rootfs = emulated_board.ensure_rootfs()
    with (
        emulated_board.start_tracker(lifetime_s=900) as tracker,
        emulated_board.start_board(*tracker.address, "rpi4-emulated", rootfs=rootfs, lifetime_s=900),
    ):
        result = CliRunner().invoke(main, [
            "bench", str(tmp_path / "pi"), "--rpc-tracker", f"{tracker.address[0]}:{tracker.address[1]}",
            "--rpc-key", "rpi4-emulated", "--runs", "10", "--min-time", "0.5", "--repeats", "2", "--warmup-runs", "2",
            "--out", str(tmp_path / "report"), "--json",
        ])
    assert result.exit_code == 0, result.output
    (document,) = json.loads(result.stdout)["documents"]
    assert document["environment"]["emulated"] is True and document["environment"]["machine"] == "aarch64"
    for r in document["results"]:
        assert r["backend"] == "tvm-rpc" and r["parity"]["passed"] and r["parity"]["max_abs_diff"] < 1e-3
    assert "[emulated]" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_probe_times_the_variants_on_the_emulated_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_emulated_board()
    rootfs = emulated_board.ensure_rootfs()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no form choice cached by an earlier run
    with (
        emulated_board.start_tracker(lifetime_s=900) as tracker,
        emulated_board.start_board(*tracker.address, "rpi4-emulated", rootfs=rootfs, lifetime_s=900),
    ):
        result = CliRunner().invoke(main, [
            "probe", "--target", "rpi4", "--model", "resnet8", "--in-channels", "1", "--image-size", "16",
            "--variants", "teacher,shift", "--quick", "--rpc-tracker", f"{tracker.address[0]}:{tracker.address[1]}",
            "--rpc-key", "rpi4-emulated", "--out", str(tmp_path / "probe"), "--json",
        ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backends"] == ["tvm-rpc"] and report["target"] == "rpi4"
    assert report["environment"]["machine"] == "aarch64" and report["environment"]["emulated"] is True
    assert any("emulated" in note for note in report["notes"])  # its timings are labelled as meaningless
    teacher, shift = report["rows"]
    assert teacher["speedup"]["tvm-rpc"] == 1.0 and shift["median_ms"]["tvm-rpc"] > 0
    assert report["recommended"] == {"tvm-rpc": "shift"}
    # the shift's TVM form was chosen by timing its candidates on the board, through the tracker
    assert shift["form_how"]["tvm-rpc"].startswith("measured on board 'rpi4-emulated'") and "emulated" in shift["form_how"]["tvm-rpc"]


FP16_KERNELS = """
import json, sys
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.enable_profiling = True
options.profile_file_prefix = sys.argv[2]
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
session.run(None, {session.get_inputs()[0].name: np.zeros(session.get_inputs()[0].shape, np.float32)})
events = json.load(open(session.end_profiling()))
print(json.dumps(sorted({(e["args"]["op_name"], next(iter(e["args"]["input_type_shape"][0])))
                         for e in events if e.get("cat") == "Node" and "Conv" in e["args"].get("op_name", "")})))
"""
"""Which convolution kernels onnxruntime ran on the board, and the type of their input."""


@pytest.mark.slow
def test_an_fp16_rpi5_bundle_computes_in_fp16_on_the_emulated_arm_board(mutual_run: Path, tmp_path: Path) -> None:
    need_emulated_board()
    rootfs = emulated_board.ensure_rootfs()
    try:
        python = emulated_board.onnxruntime_command(rootfs)
    except ToolchainError as exc:
        pytest.skip(exc.message)
    result = CliRunner().invoke(main, ["export", str(mutual_run), "--target", "rpi5", "--backend", "onnxruntime",
                                       "--precision", "fp16", "--model", "student", "--out", str(tmp_path / "pi5"),
                                       "--parity-samples", "4", "--eval-limit", "64", "--device-eval-samples", "100"])
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "pi5"

    def on_board(*args: str) -> str:
        done = subprocess.run([*python, *args], capture_output=True, text=True, timeout=600, cwd=bundle,
                              env=emulated_board.board_env(rootfs, [bundle]))
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "ok: student runs with onnxruntime" in on_board("-m", "deploy.run", "verify", "--bundle", str(bundle))
    kernels = json.loads(on_board("-c", FP16_KERNELS, str(bundle / "models" / "student.fp16.onnx"), str(tmp_path / "profile")))
    assert kernels and all(dtype == "float16" for _, dtype in kernels), kernels  # no Cast back to fp32 around them
    (row,) = json.loads(on_board("-m", "deploy.run", "eval", "--bundle", str(bundle), "--json"))["results"]
    assert row["precision"] == "fp16" and row["images"] == 100
    assert abs(row["delta_pt"]) <= 2.0  # ARM's fp16 kernels against this machine's, on the same 100 images
