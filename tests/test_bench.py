"""edgedistill bench: local backends, the device runner's results, RPC boards, reports and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_helpers import assert_one_error, files_under, run_cli
from edgedistill.bench import rpc
from edgedistill.cli import main
from edgedistill.export.pipeline import ExportOptions, export_bundle
from test_rpc import start_foreign_board
from toolchain_support import need_cross_compiler

QUICK = ["--runs", "20", "--min-time", "0.05", "--repeats", "2", "--warmup-runs", "2", "--warmup-time", "0.01", "--threads", "1"]


@pytest.fixture(scope="module")
def run_dir(mutual_run: Path) -> Path:
    return mutual_run


@pytest.fixture(scope="module")
def bundle(run_dir: Path) -> Path:
    out = run_dir.parent / "bundle"
    export_bundle(run_dir, ExportOptions(target="host", backend="tvm", out=str(out), parity_samples=4))
    return out


def _bench(*args: str) -> tuple[int, str]:
    """Exit code, and stdout for --json runs (else everything printed, errors included)."""
    result = CliRunner().invoke(main, ["bench", *args])
    return result.exit_code, result.stdout if "--json" in args and result.exit_code == 0 else result.output


def test_every_local_backend_student_vs_teacher(bundle: Path, tmp_path: Path) -> None:
    code, output = _bench(str(bundle), *QUICK, "--out", str(tmp_path / "r"), "--json")
    assert code == 0, output
    report = json.loads(output)
    measured = {(r["backend"], r["model"]) for d in report["documents"] for r in d["results"]}
    assert measured == {(b, m) for b in ("pytorch", "onnxruntime", "tvm") for m in ("student", "teacher")}
    for document in report["documents"]:
        for r in document["results"]:
            lat = r["latency_ms"]
            assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] and lat["runs"] >= 20
            assert r["memory"]["file_bytes"] > 0 and r["memory"]["peak_rss_delta_bytes"] >= 0
            assert r["accuracy"]["test_top1"] is not None and r["macs"] > 0
        assert document["environment"]["threads"] >= 1
    ort = next(r for d in report["documents"] for r in d["results"] if r["backend"] == "onnxruntime")
    assert "peak_rss_delta_bytes_arena_on" in ort["memory"]  # the arena measured on and off
    comparisons = {c["backend"]: c for c in report["comparisons"]}
    assert set(comparisons) == {"pytorch", "onnxruntime", "tvm"}
    for c in comparisons.values():
        assert c["speedup"] > 0 and c["macs_ratio"] > 1 and c["speedup_vs_macs"] == pytest.approx(c["speedup"] / c["macs_ratio"])
    (report_dir,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir() and not p.is_symlink()]
    assert os.readlink(tmp_path / "r" / "latest") == report_dir.name  # one directory per run, latest points at it
    for name in ("report.json", "report.md", "accuracy-latency.png"):
        assert (report_dir / name).stat().st_size > 0
        assert (tmp_path / "r" / name).resolve() == (report_dir / name).resolve()  # the old paths follow latest
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| where | backend |" in text
    tvm_rows = [r for d in report["documents"] for r in d["results"] if r["backend"] == "tvm"]
    assert all(r["tvm_tuning_trials"] == 0 for r in tvm_rows) and "--tune-trials" in text  # untuned TVM is flagged


def test_a_thread_sweep_measures_and_compares_at_each_count(bundle: Path, tmp_path: Path) -> None:
    code, output = _bench(str(bundle), *QUICK[:-2], "--threads", "1", "--threads", "2", "--backend", "onnxruntime",
                          "--no-memory", "--out", str(tmp_path / "r"), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert sorted((r["threads"], r["model"]) for d in report["documents"] for r in d["results"]) == [
        (1, "student"), (1, "teacher"), (2, "student"), (2, "teacher")]
    assert [d["environment"]["threads"] for d in report["documents"]] == [1, 2]
    assert sorted(c["backend"] for c in report["comparisons"]) == ["onnxruntime, 1 thread", "onnxruntime, 2 threads"]
    code, output = _bench(str(bundle), *QUICK[:-2], "--threads", "1", "--threads", "2", "--backend", "onnxruntime",
                          "--no-memory", "--out", str(tmp_path / "r"), "--no-plot")
    assert code == 0, output
    assert "threads" in output and "onnxruntime, 2 threads" in output  # the narrow table shows the count when it varies


def test_device_result_is_imported_into_the_same_report(bundle: Path, tmp_path: Path) -> None:
    result_file = tmp_path / "device.json"
    device = subprocess.run(  # exactly what a board runs, from inside the bundle
        [sys.executable, "-m", "deploy.run", "bench", "--backend", "onnxruntime", "--runs", "20", "--min-time", "0.05",
         "--repeats", "2", "--threads", "1", "--no-memory", "--out", str(result_file)],
        cwd=bundle, capture_output=True, text=True, timeout=300,
    )
    assert device.returncode == 0, device.stderr
    code, output = _bench("--import", str(result_file), "--out", str(tmp_path / "r"), "--no-plot", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert [c["backend"] for c in report["comparisons"]] == ["onnxruntime"]


def test_run_directory_is_exported_once_then_reused(run_dir: Path, tmp_path: Path) -> None:
    args = [str(run_dir), "--backend", "onnxruntime", "--no-memory", "--no-plot", *QUICK, "--out", str(tmp_path / "r")]
    code, output = _bench(*args)
    assert code == 0, output
    bundle = run_dir / "bundles" / "host-tvm" / "manifest.json"
    stamp = bundle.stat().st_mtime_ns
    code, output = _bench(*args)
    assert code == 0 and bundle.stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def tracker() -> Iterator[rpc.TrackerProcess]:
    with rpc.start_tracker(lifetime_s=300) as proc:
        yield proc


def test_bench_through_an_rpc_board(bundle: Path, tracker: rpc.TrackerProcess, tmp_path: Path) -> None:
    address = f"{tracker.address[0]}:{tracker.address[1]}"
    with rpc.start_server(tracker.address, "host-board", lifetime_s=300):
        code, output = _bench(str(bundle), "--rpc-tracker", address, "--rpc-key", "host-board", *QUICK[:-2],
                              "--out", str(tmp_path / "r"), "--no-plot", "--json")
    assert code == 0, output
    (document,) = json.loads(output)["documents"]
    assert document["environment"]["rpc"]["key"] == "host-board"
    for r in document["results"]:
        assert r["backend"] == "tvm-rpc" and r["parity"]["passed"] and r["latency_ms"]["median"] > 0
    assert "time evaluator" in (tmp_path / "r" / "report.md").read_text()


def test_a_board_of_another_architecture_gets_nothing(bundle: Path, tracker: rpc.TrackerProcess, tmp_path: Path) -> None:
    """An x86 host bundle and a board registered as rpi4 that is arm64: one error naming both, before any upload."""
    address = f"{tracker.address[0]}:{tracker.address[1]}"
    with start_foreign_board(tracker.address, "rpi4", lifetime_s=300):
        result = run_cli(["bench", str(bundle), "--rpc-tracker", address, "--rpc-key", "rpi4", *QUICK[:-2],
                          "--out", str(tmp_path / "r"), "--no-plot"])
    assert_one_error(result, "aarch64", "x86_64", "'host'", "nothing was uploaded")
    assert not (tmp_path / "r").exists()


def test_rpc_failures_are_clear_and_bounded(bundle: Path, tracker: rpc.TrackerProcess) -> None:
    start = time.monotonic()
    code, output = _bench(str(bundle), "--rpc-tracker", "127.0.0.1:1", "--rpc-key", "rpi4", "--no-plot")
    assert code == 2 and "tracker" in output
    address = f"{tracker.address[0]}:{tracker.address[1]}"
    code, output = _bench(str(bundle), "--rpc-tracker", address, "--rpc-key", "no-such-board", "--rpc-wait", "2", "--no-plot")
    assert code == 2 and "no-such-board" in output
    assert time.monotonic() - start < 60


def test_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "models" / "student.onnx", "ab") as handle:
        handle.write(b"\0")
    code, output = _bench(str(copy), "--no-plot")
    assert code == 2 and "student.onnx" in output


def test_a_bundle_that_lost_its_manifest_says_so(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("report"))
    (copy / "manifest.json").unlink()
    before = files_under(tmp_path)
    error = assert_one_error(run_cli(["bench", str(copy), "--no-plot"]), "manifest.json is missing", "re-export")
    assert "student-best.pt" not in error
    assert files_under(tmp_path) == before


def test_an_unwritable_out_fails_before_measuring(bundle: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    start = time.monotonic()
    assert_one_error(run_cli(["bench", str(bundle), "--out", str(blocker / "r")]), "cannot write the report", "nothing was measured")
    assert time.monotonic() - start < 10  # no measuring first


def test_bundle_for_another_target_is_refused(run_dir: Path, tmp_path: Path) -> None:
    need_cross_compiler()
    export_bundle(run_dir, ExportOptions(target="rpi4", out=str(tmp_path / "pi"), models=("student",), parity_samples=4))
    code, output = _bench(str(tmp_path / "pi"), "--no-plot")
    assert code == 2 and "rpi4" in output
    code, output = _bench(str(tmp_path / "pi"), "--force", "--backend", "tvm", "--no-plot")
    assert code == 2 and "cannot run the bundle's TVM code here" in output


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "tflite"], "unknown backend 'tflite'"),
    (["--backend", "tensorrt"], "TensorRT engines are built and measured on the device"),
    (["--rpc-tracker", "127.0.0.1:9"], "needs --rpc-key"),
])
def test_bad_bench_input(bundle: Path, args: list[str], message: str) -> None:
    code, output = _bench(str(bundle), "--no-plot", *args)
    assert code == 2 and message in output, output


def test_bad_import_and_missing_source(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, output = _bench("--import", str(broken))
    assert code == 2 and "not valid JSON" in output
    code, output = _bench(str(tmp_path / "nothing"))
    assert code == 2 and "no such bundle" in output
    code, output = _bench()
    assert code == 2 and "nothing to benchmark" in output
