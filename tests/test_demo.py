"""``edgedistill demo``: the README's first command, all three stages on the shipped default data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedistill.cli import main
from edgedistill.data import load_dataset
from edgedistill.errors import DataError


def _fashion_mnist_installed() -> bool:
    try:
        load_dataset("fashion-mnist", limit=1)
    except DataError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _fashion_mnist_installed(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_demo_trains_exports_and_benchmarks_student_against_teacher(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--limit", "512", "--quick", "--threads", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert set(manifest["models"]) == {"student", "teacher"}
    report = json.loads((out / "bundle" / "report" / "report.json").read_text())
    results = [r for document in report["documents"] for r in document["results"]]
    measured = {(r["model"], r["backend"]) for r in results}
    assert {("student", "onnxruntime"), ("teacher", "onnxruntime"), ("student", "tvm"), ("teacher", "tvm")} <= measured
    assert all(r["latency_ms"]["median"] > 0 for r in results)
    assert {c["backend"] for c in report["comparisons"]} >= {"onnxruntime", "tvm"}  # student vs teacher, per backend
    assert (out / "bundle" / "report" / "accuracy-latency.png").stat().st_size > 0
    again = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output
