"""``edgedistill probe``: untrained teacher and cheap variants, exported and timed side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cli_helpers import assert_one_error, files_under, run_cli

FAST = ["--model", "resnet8", "--in-channels", "1", "--quick", "--backend", "onnxruntime", "--threads", "1"]


def test_probe_times_every_variant_and_recommends_one(tmp_path: Path) -> None:
    out = tmp_path / "probe"
    result = run_cli(["probe", *FAST, "--variants", "teacher,shift,group:4", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backends"] == ["onnxruntime"] and [r["variant"] for r in report["rows"]] == ["teacher", "shift", "group:4"]
    teacher, shift, group = report["rows"]
    assert teacher["speedup"]["onnxruntime"] == 1.0 and teacher["form"] == {"onnxruntime": "trained"}
    assert shift["macs"] < teacher["macs"] and shift["executed_macs"]["onnxruntime"] >= shift["macs"]  # a one-hot shift executes its taps
    for row in (shift, group):
        ratio = teacher["macs"] / row["macs"]
        assert abs(row["speedup_vs_macs"]["onnxruntime"] - row["speedup"]["onnxruntime"] / ratio) < 1e-9
    assert report["recommended"]["onnxruntime"] in ("shift", "group:4")
    assert files_under(out) == {"probe.json", "probe.md", "probe.png"}
    assert "recommended on onnxruntime" in (out / "probe.md").read_text()
    # a second probe into the same folder needs --force, and --force replaces only a probe's folder
    assert_one_error(run_cli(["probe", *FAST, "--variants", "teacher,shift", "--out", str(out)]), "already exists")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert_one_error(run_cli(["probe", *FAST, "--out", str(mine), "--force"]), "not an earlier probe's folder")
    assert (mine / "notes.txt").read_text() == "keep"


def test_bad_probe_input_is_one_error_line_before_any_work(tmp_path: Path) -> None:
    for args, needle in ((["--variants", "teacher,shfit"], "unknown cheap convolution kind 'shfit'"),
                         (["--variants", "shift,depthwise"], "must include 'teacher'"),
                         (["--variants", "teacher,shift:2"], "bad variant 'shift:2'"),
                         (["--backend", "tflite"], "unknown backend 'tflite'"),
                         (["--target", "rpi-4"], "did you mean 'rpi4'"),
                         (["--target", "rpi4"], "probe times networks on this machine"),
                         (["--target", "rpi4", "--rpc-tracker", "127.0.0.1:9"], "--rpc-tracker needs --rpc-key"),
                         (["--target", "rpi4", "--rpc-tracker", "127.0.0.1:9", "--rpc-key", "rpi4"], "TVM libraries only"),
                         (["--image-size", "0"], "--image-size")):
        assert_one_error(run_cli(["probe", *FAST, *args], cwd=tmp_path), needle)
    # a board probe fails in seconds, before any export, when no tracker answers
    started = time.monotonic()
    assert_one_error(run_cli(["probe", "--target", "rpi4", "--rpc-tracker", "127.0.0.1:9", "--rpc-key", "rpi4"], cwd=tmp_path),
                     "127.0.0.1:9")
    assert time.monotonic() - started < 30
    assert files_under(tmp_path) == set()
