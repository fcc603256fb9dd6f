"""edgedistill bench without measuring anything: reports kept per run and written as one set, the
report directory checked before measuring, a bundle that lost its manifest, tables that fit 80
columns. Results come in through --import (a device's result file), so these tests take seconds."""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli_helpers import assert_one_error, files_under, run_cli
from deploy import BENCH_FORMAT
from edgedistill.bench import report as report_module
from edgedistill.bench.report import LATEST, REPORT_FORMAT, save_report
from edgedistill.commands.bench_cmd import render_bench
from edgedistill.ui import table

STAMP = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


def _result(model: str, backend: str, median: float, top1: float | None, macs: int, high_cv: bool = False) -> dict[str, Any]:
    return {
        "model": model, "backend": backend, "threads": 2,
        "latency_ms": {"first_run": median * 3.1, "median": median, "p90": median * 1.21, "p99": median * 1.53,
                       "mean": median * 1.05, "std": median * 0.1, "min": median * 0.9, "runs": 120, "repeats": 5,
                       "cv": 0.86 if high_cv else 0.12, "high_cv": high_cv},
        "memory": {"file_bytes": 1_234_567 if model == "student" else 9_876_543,
                   "weight_bytes": 1_100_000 if model == "student" else 9_000_000,
                   "peak_rss_delta_bytes": 23_456_789 if model == "student" else 45_678_901,
                   "peak_rss_delta_bytes_arena_on": 34_567_890},
        "accuracy": {"test_top1": top1}, "macs": macs, "params": 34_600,
    }


def document(hostname: str = "bench-host", emulated: bool = False) -> dict[str, Any]:
    """A device result as 'python3 -m deploy.run bench' writes it (two backends, student and teacher)."""
    return {
        "format": BENCH_FORMAT, "created": "2025-01-02T03:04:05Z",
        "environment": {"hostname": hostname, "machine": "x86_64", "threads": 2, "emulated": emulated},
        "bundle": {"target": "host"}, "method": {},
        "results": [
            _result("student", "onnxruntime", 0.0307, 0.8450, 4_870_000, high_cv=True),
            _result("teacher", "onnxruntime", 0.5431, 0.8489, 40_520_000),
            _result("student", "tvm", 123.4567, 0.8450, 4_870_000),
            _result("teacher", "tvm", 2187.6543, None, 40_520_000),
        ],
    }


@pytest.fixture()
def result_file(tmp_path: Path) -> Path:
    path = tmp_path / "device" / "result.json"
    path.parent.mkdir()
    path.write_text(json.dumps(document()))
    return path


def _bench(*args: str, cwd: Path | None = None):
    return run_cli(["bench", *args], cwd=cwd)


def _report_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if STAMP.match(p.name))


# --- 1. one directory per report, written as a set, earlier ones kept --------------------------


def test_a_second_bench_keeps_the_first_report_and_never_mixes_runs(result_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    first = _bench("--import", str(result_file), "--out", str(out))
    assert first.exit_code == 0, first.stderr
    (earlier,) = _report_dirs(out)
    assert sorted(p.name for p in earlier.iterdir()) == ["accuracy-latency.png", "report.json", "report.md"]
    assert os.readlink(out / LATEST) == earlier.name
    assert "no earlier report" in first.stderr and str(earlier) in first.stderr
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}

    other = json.loads(result_file.read_text())
    other["environment"]["hostname"] = "second-run"
    result_file.write_text(json.dumps(other))
    second = _bench("--import", str(result_file), "--out", str(out), "--no-plot")
    assert second.exit_code == 0, second.stderr
    dirs = _report_dirs(out)
    assert len(dirs) == 2 and dirs[0] == earlier
    newer = dirs[1]
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before  # the first report, untouched
    assert sorted(p.name for p in newer.iterdir()) == ["report.json", "report.md"]  # --no-plot: no plot, not an old one
    assert os.readlink(out / LATEST) == newer.name
    assert json.loads((out / LATEST / "report.json").read_text())["documents"][0]["environment"]["hostname"] == "second-run"
    # the old paths follow latest: report.json is the new one, and there is no plot to show
    assert json.loads((out / "report.json").read_text())["documents"][0]["environment"]["hostname"] == "second-run"
    assert not (out / "accuracy-latency.png").exists()
    assert "kept 1 earlier report" in second.stderr and earlier.name in second.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_user_files_in_out_are_never_touched(result_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"report.md": "my notes", "latest": "not a pointer", "accuracy-latency.png": "my picture"}
    for name, text in mine.items():
        (out / name).write_text(text)
    result = _bench("--import", str(result_file), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert {name: (out / name).read_text() for name in mine} == mine
    (report_dir,) = _report_dirs(out)
    assert (report_dir / "report.json").is_file()
    assert files_under(out) == set(mine) | {report_dir.name, f"{report_dir.name}/report.json", f"{report_dir.name}/report.md",
                                           f"{report_dir.name}/accuracy-latency.png"}
    assert "left alone" in result.stderr and "not written by edgedistill bench" in result.stderr


def test_an_old_flat_report_is_moved_aside_not_mixed(result_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle" / "report"
    out.mkdir(parents=True)
    (out / "report.json").write_text(json.dumps({"format": REPORT_FORMAT, "documents": [], "comparisons": []}))
    (out / "report.md").write_text("old")
    stale = out / "accuracy-latency.png"
    stale.write_bytes(b"older plot")
    os.utime(stale, (1_000_000_000, 1_000_000_000))  # from a run long before: the old --no-plot left it behind
    result = _bench("--import", str(result_file), "--out", str(out), "--no-plot")
    assert result.exit_code == 0, result.stderr
    dirs = _report_dirs(out)
    moved = [d for d in dirs if (d / "report.md").is_file() and (d / "report.md").read_text() == "old"]
    assert len(moved) == 1 and not (moved[0] / "accuracy-latency.png").exists()
    assert stale.read_bytes() == b"older plot"  # not ours to pair with anything: left where it was
    assert "moved an earlier report" in result.stderr
    latest = out / LATEST
    assert json.loads((latest / "report.json").read_text())["documents"]


def test_a_failed_save_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "new" / "reports"

    def broken_markdown(_documents: list) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_module, "markdown", broken_markdown)
    with pytest.raises(OSError):
        save_report([document()], out, plot=False)
    assert not (tmp_path / "new").exists()


def test_two_reports_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    first = save_report([document()], tmp_path, plot=False, when=when)
    second = save_report([document()], tmp_path, plot=False, when=when)
    assert first.directory.name == "20250102T030405Z" and second.directory.name == "20250102T030405Z-2"
    assert second.earlier == [first.directory] and os.readlink(tmp_path / LATEST) == second.directory.name


def test_write_report_keeps_its_signature_for_the_demo(tmp_path: Path) -> None:
    written = report_module.write_report([document()], tmp_path / "bundle" / "report", False)
    assert [p.name for p in written] == ["report.json", "report.md"] and all(p.is_file() for p in written)
    assert written[0].parent.parent == tmp_path / "bundle" / "report"


# --- 2. the report directory is checked before anything is measured ----------------------------


def test_unwritable_out_fails_before_measuring(result_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.bench import service

    def no_measuring(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("measured although the report cannot be written")

    monkeypatch.setattr(service, "run_bench", no_measuring)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = files_under(tmp_path)
    for out in (blocker, blocker / "reports"):
        error = assert_one_error(_bench("--import", str(result_file), "--out", str(out)), "cannot write the report", str(out))
        assert "nothing was measured" in error
    assert files_under(tmp_path) == before


def test_a_save_that_fails_at_the_end_prints_the_tables_first(result_file: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r"))

    monkeypatch.setattr(report_module, "save_report", full_disk)
    result = _bench("--import", str(result_file), "--out", str(tmp_path / "r"))
    error = assert_one_error(result, "could not be saved", "No space left on device", "printed above")
    assert "0.031" in result.stdout and "2187.654" in result.stdout  # the measurements were not lost
    assert "latency" in result.stdout and "error:" not in result.stdout and error


# --- 4. a bundle that lost its manifest.json ---------------------------------------------------


def test_a_bundle_without_its_manifest_says_so(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "deploy").mkdir()
    (bundle / "models" / "student.onnx").write_bytes(b"onnx")
    before = files_under(tmp_path)
    error = assert_one_error(_bench(str(bundle), "--no-plot"), "manifest.json is missing", str(bundle), "re-export")
    assert "student-best.pt" not in error and "run directory" not in error
    assert files_under(tmp_path) == before


# --- 5. tables readable at 80 columns ----------------------------------------------------------


def _render(width: int, *args: Any, **kwargs: Any) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    render_bench(*args, console=console, **kwargs)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width, text
    return text


@pytest.mark.parametrize("width", [80, 100])
def test_bench_tables_show_every_number_whole(width: int) -> None:
    text = _render(width, [document()])
    assert "…" not in text, text
    for figure in ("0.031", "0.543", "123.457", "2187.654", "0.037", "2647.062", "0.86!", "22.37", "43.56", "1.18", "9.42",
                   "84.50%", "untrained", "17.69×", "8.3×", "2.13", "8.0×", "1.9×", "-0.39 pt", "teacher"):
        assert figure in text, f"{figure!r} not in:\n{text}"
    assert "bench-host" in text  # one machine: named in the title


def test_bench_default_table_is_narrow_and_wide_shows_everything() -> None:
    narrow = _render(80, [document()])
    assert "p99" not in narrow and "first run" not in narrow
    wide = _render(220, [document()], wide=True)
    for header in ("p99", "first run", "ORT arena on", "weights", "threads"):
        assert header in wide, wide
    assert "3347.111" in wide and "32.97" in wide and "0.10" in wide  # a p99, the arena-on RSS, a first run


def test_wide_table_at_80_columns_is_split_not_cut() -> None:
    text = _render(80, [document(), document("pi-board-in-the-lab", emulated=True)], wide=True)
    assert "…" not in text and "(continued)" in text
    for figure in ("0.031", "2187.654", "3347.111", "32.97", "pi-board-in-the-lab", "[emulated]"):
        assert figure in text, text


def test_student_names_and_target_names_are_never_cut() -> None:
    rows = [(f"student-{i}", "student", "resnet20 (shift)", "34.60 k", "4.87 M", "84.50%", 6, "84.12%") for i in range(4)]
    rows.append(("online-teacher", "teacher", "resnet20 (online ensemble of 4)", "140.20 k", "19.51 M", "85.00%", 6, "85.30%"))
    train = table("od on fashion-mnist: 2 epochs in 400 s", ["network", "role", "model", "params", "MACs", "best val top-1",
                                                               "epoch", "test top-1"], rows)
    targets = table("deployment targets", ["name", "aliases", "device", "backends", "precision", "description"], [
        ("jetson-orin-nano", "jetson", "gpu (aarch64)", "tensorrt, tvm, onnxruntime", "fp16",
         "NVIDIA Jetson Orin Nano 8 GB: 6x Cortex-A78AE, Ampere GPU"),
        ("jetson-xavier-nx", "", "gpu (aarch64)", "tensorrt, tvm, onnxruntime", "fp16", "NVIDIA Jetson Xavier NX"),
    ])
    for width, renderable, names in ((80, train, [f"student-{i}" for i in range(4)] + ["online-teacher", "140.20 k", "85.30%"]),
                                     (60, train, ["student-3", "online-teacher", "19.51 M"]),
                                     (60, targets, ["jetson-orin-nano", "jetson-xavier-nx", "fp16"])):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(renderable)
        text = console.export_text()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
        for name in names:
            assert name in text, f"{name!r} not in:\n{text}"
