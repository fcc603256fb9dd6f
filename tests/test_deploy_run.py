"""The device CLI end to end, run the way a board runs it: ``python3 -m deploy.run``
from inside a bundle, using the bundle's own copy of deploy/."""

from __future__ import annotations

import ast
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_helpers import CLASSES, DEPLOY_DIR, compile_tvm, export_cnn, make_bundle

FAST = ["--runs", "20", "--min-time", "0.05", "--repeats", "2", "--warmup-runs", "2", "--warmup-time", "0.01"]
LATENCY_KEYS = {"first_run", "median", "p90", "p99", "mean", "std", "min", "runs", "repeats", "cv", "high_cv"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-models")
    student = export_cnn(root / "student.onnx", width=8, depthwise=True)
    teacher = export_cnn(root / "teacher.onnx", width=48, seed=1)
    return student, teacher, compile_tvm(student, root / "student.so"), compile_tvm(teacher, root / "teacher.so")


@pytest.fixture
def bundle(tmp_path, models):
    student, teacher, student_so, teacher_so = models
    return make_bundle(
        tmp_path / "bundle", {"student": student, "teacher": teacher}, tvm={"student": student_so, "teacher": teacher_so}
    )


def run_cli(bundle: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.run", *args], cwd=bundle, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_bench_writes_a_valid_result(bundle, tmp_path):
    out = tmp_path / "result.json"
    done = run_cli(bundle, "bench", *FAST, "--memory-runs", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "speed-up of the student over the teacher" in done.stdout
    document = json.loads(out.read_text())
    assert document["format"] == "edgedistill-bench/1"
    env = document["environment"]
    assert {"hostname", "machine", "cpu_model", "cores", "threads", "governor", "temperature_c", "python", "runtimes", "emulated"} <= set(env)
    assert env["runtimes"]["onnxruntime"]
    assert [r["model"] for r in document["results"]] == ["student", "teacher"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for result in document["results"]:
        assert result["backend"] == "onnxruntime" and result["threads"] >= 1
        latency = result["latency_ms"]
        assert set(latency) == LATENCY_KEYS
        assert 0 < latency["min"] <= latency["median"] <= latency["p99"] and latency["runs"] >= 20
        memory = result["memory"]
        assert memory["arena"] == "off" and memory["peak_rss_delta_bytes"] > 0 and memory["peak_rss_delta_bytes_arena_on"] > 0
        assert memory["weight_bytes"] > 0 and memory["file_bytes"] == (bundle / result["artifact"]).stat().st_size
        assert result["output_shape"] == [1, CLASSES]
        assert result["artifact_sha256"] == manifest["files"][result["artifact"]]
        assert result["accuracy"] == manifest["models"][result["model"]]["accuracy"]
    student, teacher = document["results"]
    assert teacher["memory"]["weight_bytes"] > student["memory"]["weight_bytes"]


def test_bench_tvm_json_to_stdout(bundle, tmp_path):
    done = run_cli(bundle, "bench", "--backend", "tvm", "--model", "student", "--threads", "1", "--no-memory", "--json", *FAST)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    (result,) = document["results"]
    assert result["backend"] == "tvm" and result["threads"] == 1 and result["memory"] is None
    assert result["artifact"] == "models/student.tvm.so"
    assert (bundle / "results").is_dir()  # default --out inside the bundle


def test_tampered_bundle_fails_with_one_line(bundle):
    path = bundle / "models" / "student.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    done = run_cli(bundle, "bench", *FAST)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bundle check failed: models/student.onnx does not match")


def test_bundle_for_another_cpu_is_refused_unless_forced(tmp_path, models):
    student, teacher, _, _ = models
    other = "x86-avx2" if platform.machine() in ("aarch64", "arm64") else "rpi4"
    root = make_bundle(tmp_path / "arm", {"student": student, "teacher": teacher}, target=other)
    refused = run_cli(root, "verify")
    assert refused.returncode == 2 and f"bundle is for target '{other}'" in refused.stderr and "--force" in refused.stderr
    forced = run_cli(root, "bench", "--force", "--no-memory", *FAST)  # ONNX runs anywhere
    assert forced.returncode == 0, forced.stderr


def test_verify_info_and_missing_engine(bundle):
    verify = run_cli(bundle, "verify", "--backend", "tvm")
    assert verify.returncode == 0, verify.stderr
    assert "files match manifest.json" in verify.stdout and "student runs with tvm, output (1, 10)" in verify.stdout
    info = run_cli(bundle, "info", "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["target"] == "host" and set(described["models"]) == {"student", "teacher"}
    assert described["models"]["student"]["tensorrt_engine"] is None
    trt = run_cli(bundle, "bench", "--backend", "tensorrt", *FAST)
    assert trt.returncode == 2 and "build-engine" in trt.stderr
    bad = run_cli(bundle, "bench", "--runs", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad measurement option")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_deploy_never_imports_torch_or_edgedistill():
    for path in sorted(DEPLOY_DIR.rglob("*.py")):
        roots = {name.split(".", 1)[0] for name in _imports(path)}
        assert not roots & {"torch", "edgedistill", "onnx"}, f"{path.name} imports {roots & {'torch', 'edgedistill', 'onnx'}}"
    modules = [".".join(("deploy", *p.relative_to(DEPLOY_DIR).with_suffix("").parts)) for p in sorted(DEPLOY_DIR.rglob("*.py"))
               if p.stem not in ("__init__", "rpc_server")]
    code = f"import sys; import {', '.join(modules)}; print([m for m in sys.modules if m.split('.')[0] in ('torch', 'edgedistill', 'onnx')])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_device_modules_parse_as_python_3_8():
    """JetPack 5 ships Python 3.8; the TVM RPC server needs TVM (Python >= 3.10) anyway."""
    for path in sorted(DEPLOY_DIR.rglob("*.py")):
        if path.stem != "rpc_server":
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))
