"""edgedistill export: ONNX parity for every kind and family, bundles for CPU/ARM/Jetson targets, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from deploy.manifest import load_manifest, verify_files
from edgedistill.cheap import CheapSpec
from edgedistill.cli import main
from edgedistill.errors import EdgeDistillError, ToolchainError, UnknownNameError
from edgedistill.export.onnx_export import export_onnx, read_metadata
from edgedistill.export.pipeline import ExportOptions, export_bundle
from edgedistill.toolchains.cc import elf_machine
from cli_helpers import assert_one_error, files_under, run_cli
from edgedistill.models import ModelSpec, create_model
from toolchain_support import need_cross_compiler


@pytest.mark.parametrize(("arch", "kind"), [
    ("resnet8", "shift"), ("resnet8", "depthwise"), ("resnet8", "group"), ("vgg16", "group"), ("wrn16_2", "shift"),
])
def test_every_kind_and_family_exports_and_matches_pytorch(arch: str, kind: str, tmp_path: Path) -> None:
    model = create_model(ModelSpec(arch, 10, 3, cheap=CheapSpec(kind))).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    result = export_onnx(model, (2, 3, 32, 32), tmp_path / "m.onnx", opset=18, metadata={"role": "student"})
    graph = onnx.load(str(result.path))
    if arch != "wrn16_2":  # pre-activation blocks: a BN after an Add has no conv to fold into
        assert "BatchNormalization" not in result.op_types
    assert len(graph.graph.input) == 1
    assert not graph.graph.initializer or all(not i.data_location for i in graph.graph.initializer)  # one file
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-3)
    assert read_metadata(result.path)["role"] == "student"


def test_dynamic_batch_and_an_old_opset(tmp_path: Path) -> None:
    model = create_model(ModelSpec("resnet8", 10, 1, cheap=CheapSpec("shift"))).eval()
    result = export_onnx(model, (1, 1, 32, 32), tmp_path / "m.onnx", opset=17, dynamic_batch=True)
    assert result.opset == 17
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.zeros((5, 1, 32, 32), np.float32)
    assert session.run(None, {"input": x})[0].shape == (5, 10)


@pytest.fixture(scope="module")
def run_dir(mutual_run: Path) -> Path:
    return mutual_run


def _options(tmp_path: Path, **kw: object) -> ExportOptions:
    return ExportOptions(out=str(tmp_path / "bundle"), parity_samples=8, calibration_samples=16, **kw)


def test_host_tvm_bundle_is_verified_and_self_contained(run_dir: Path, tmp_path: Path) -> None:
    summary = export_bundle(run_dir, _options(tmp_path, target="host", backend="tvm"))
    root = Path(summary.bundle)
    manifest = load_manifest(root)
    assert verify_files(root, manifest) == len(manifest["files"])
    assert manifest["backend"] == "tvm" and manifest["input"]["shape"] == [1, 1, 32, 32]
    for role in ("student", "teacher"):
        entry = manifest["models"][role]
        assert (root / entry["onnx"]).is_file() and (root / entry["artifacts"]["tvm"]["path"]).is_file()
        assert {p["candidate"] for p in entry["parity"]} == {"onnxruntime", "tvm (host)"}
        assert all(p["passed"] for p in entry["parity"])
        assert entry["trained"] and 0 <= entry["accuracy"]["test_top1"] <= 1
        measured = entry["artifact_accuracy"]  # the TVM library's own top-1, measured here like the ONNX file's
        assert set(measured) == {entry["onnx"], entry["artifacts"]["tvm"]["path"]}
        assert measured[entry["artifacts"]["tvm"]["path"]]["test_top1"] == pytest.approx(measured[entry["onnx"]]["test_top1"], abs=0.01)
    assert manifest["models"]["student"]["macs"] < manifest["models"]["teacher"]["macs"]
    assert (root / "deploy" / "run.py").is_file() and not list(root.rglob("__pycache__"))
    assert "onnxruntime" in (root / "requirements.txt").read_text()
    assert not list(tmp_path.glob(".*.tmp")), "temporary directory left behind"


def test_rpi4_bundle_is_cross_compiled_for_aarch64(run_dir: Path, tmp_path: Path) -> None:
    need_cross_compiler()
    summary = export_bundle(run_dir, _options(tmp_path, target="rpi4", models=("student",)))
    root = Path(summary.bundle)
    tvm = load_manifest(root)["models"]["student"]["artifacts"]["tvm"]
    assert elf_machine(root / tvm["path"]) == "aarch64"
    assert tvm["target"]["mcpu"] == "cortex-a72" and "ELF header" in tvm["verified"]


def test_jetson_bundle_ships_a_checked_graph_and_calibration_set(run_dir: Path, tmp_path: Path) -> None:
    summary = export_bundle(run_dir, _options(tmp_path, target="xavier", models=("student",)))
    root = Path(summary.bundle)
    manifest = load_manifest(root)
    assert manifest["backend"] == "tensorrt" and manifest["target"]["name"] == "jetson-xavier-nx"
    assert onnx.load(str(root / "models" / "student.onnx")).opset_import[0].version == 17  # TensorRT 8.5
    trt = manifest["models"]["student"]["artifacts"]["tensorrt"]
    assert trt["build_on_device"] and trt["tensorrt_version"] == "8.5" and trt["precision"] == "fp16"
    calibration = np.load(root / manifest["calibration"]["path"])
    assert calibration.shape == (16, 1, 32, 32) and calibration.dtype == np.float32
    assert "digits train" in manifest["calibration"]["source"]


def test_a_graph_tensorrt_cannot_build_is_refused_before_shipping(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "old-jetson.toml"
    target.write_text((Path(__file__).parents[1] / "targets" / "jetson-xavier-nx.toml").read_text()
                      .replace('name = "jetson-xavier-nx"', 'name = "old-jetson"').replace("onnx_opset = 17", "onnx_opset = 18")
                      .replace('aliases = ["xavier-nx", "xavier"]', "aliases = []"))
    with pytest.raises(ToolchainError, match="will not build with TensorRT 8.5"):
        export_bundle(run_dir, _options(tmp_path, target=str(target), models=("student",)))
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".bundle*"))


def test_a_run_without_a_standard_teacher_exports_an_untrained_reference(run_dir: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "od-like"
    lonely.mkdir()
    shutil.copy(run_dir / "student-best.pt", lonely)
    summary = export_bundle(lonely, _options(tmp_path, target="host"))
    teacher = load_manifest(Path(summary.bundle))["models"]["teacher"]
    assert teacher["trained"] is False and teacher["accuracy"] is None and "untrained" in teacher["note"]
    assert any("untrained" in note for note in summary.notes)


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "rpi-4"], "did you mean"),
    (["--target", "rpi4", "--backend", "tensorrt"], "does not support the tensorrt backend"),
    (["--backend", "tflite"], "unknown backend"),
    (["--batch", "0"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--image-size", "0"], "--image-size"),
    (["--tune-trials", "-1"], "--tune-trials"),
    (["--tune-trials", "8"], "--tune-trials applies to the tvm backend only"),
    (["--tuning-dir", "db"], "--tuning-dir applies to the tvm backend only"),
    (["--parity-samples", "0"], "--parity-samples"),
    (["--calibration-samples", "0"], "--calibration-samples"),
])
def test_bad_export_input_gives_one_clear_error(run_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(["export", str(run_dir), "--out", "b", *args], cwd=tmp_path)
    assert_one_error(result, message)
    assert files_under(tmp_path) == set()


def test_force_replaces_only_a_bundle_of_ours(run_dir: Path, tmp_path: Path) -> None:
    users = tmp_path / "mine"
    users.mkdir()
    (users / "important.txt").write_text("keep me")
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me too")
    for out in (users, plain):
        assert_one_error(run_cli(["export", str(run_dir), "--out", str(out), "--force"]), "not an edgedistill bundle")
    assert (users / "important.txt").read_text() == "keep me" and plain.read_text() == "keep me too"
    # the current directory and the run itself are never replaced, even when they look like bundles
    assert_one_error(run_cli(["export", str(run_dir), "--out", ".", "--force"], cwd=tmp_path), "current directory")
    assert_one_error(run_cli(["export", str(run_dir), "--out", str(run_dir.parent), "--force"]), "holds the run")

    bundle = tmp_path / "bundle"
    options = _options(tmp_path, models=("student",))
    export_bundle(run_dir, options)
    (bundle / "report").mkdir()
    (bundle / "report" / "report.json").write_text("{}")  # what bench writes is ours too
    export_bundle(run_dir, dataclasses.replace(options, overwrite=True))
    assert load_manifest(bundle)["models"]["student"]
    (bundle / "models" / "my-notes.md").write_text("mine")
    with pytest.raises(EdgeDistillError, match="did not write .*models/my-notes.md"):
        export_bundle(run_dir, dataclasses.replace(options, overwrite=True))
    assert (bundle / "models" / "my-notes.md").read_text() == "mine"


def test_an_interrupted_export_leaves_nothing_and_says_so(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.export import pipeline

    def interrupt(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.onnx_export, "export_onnx", interrupt)
    result = run_cli(["export", str(run_dir), "--out", "b"], cwd=tmp_path)
    assert result.exit_code == 130 and "export interrupted" in result.stderr and "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr and files_under(tmp_path) == set()


def test_an_unfinished_run_says_resume_it(run_dir: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    shutil.copy(run_dir / "config.yaml", unfinished)
    shutil.copy(run_dir / "teacher-best.pt", unfinished)
    assert_one_error(run_cli(["export", str(unfinished), "--out", str(tmp_path / "b")]), "is incomplete",
                     f"edgedistill train --resume --out {unfinished}")


def test_corrupt_checkpoint_and_unwritable_out_dir(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "student-best.pt").write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["export", str(broken), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "corrupt" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(blocker / "bundle")])
    assert result.exit_code == 2 and "cannot write the bundle" in result.output
    existing = tmp_path / "existing"
    existing.mkdir()
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(existing)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_missing_cross_compiler_fails_before_any_work(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ToolchainError, match="apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"):
        export_bundle(run_dir, _options(tmp_path, target="rpi4"))
    assert not (tmp_path / "bundle").exists()


def test_a_cross_compiler_that_cannot_link_fails_before_any_work_with_its_own_words(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fresh machine with gcc-aarch64-linux-gnu but no libc6-dev-arm64-cross looks like."""
    fake = tmp_path / "bin" / "aarch64-linux-gnu-gcc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '/usr/bin/aarch64-linux-gnu-ld: cannot find crti.o: No such file or directory' >&2\n"
                    "echo 'collect2: error: ld returned 1 exit status' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = run_cli(["export", str(run_dir), "--target", "rpi4", "--out", "b"], cwd=tmp_path)
    error = assert_one_error(result, "cannot find crti.o", "apt-get install libc6-dev-arm64-cross")
    assert ".tar" not in error and "exporting" not in error
    assert files_under(tmp_path) == {"bin", "bin/aarch64-linux-gnu-gcc"}


def test_export_json_output(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(run_dir), "--model", "student", "--target", "host",
                                       "--out", str(tmp_path / "b"), "--parity-samples", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] == "onnxruntime" and report["models"][0]["role"] == "student"
    with pytest.raises(UnknownNameError):
        export_bundle(run_dir, _options(tmp_path, target="nope"))
    with pytest.raises(EdgeDistillError, match="unknown model role"):
        export_bundle(run_dir, _options(tmp_path, models=("teachers",)))


def test_export_at_another_image_size(run_dir: Path, tmp_path: Path) -> None:
    summary = export_bundle(run_dir, _options(tmp_path, target="host", models=("student",), image_size=48))
    manifest = load_manifest(Path(summary.bundle))
    assert manifest["input"]["shape"] == [1, 1, 48, 48]
    assert manifest["models"]["student"]["parity"][0]["passed"]


def test_only_a_standard_conv_network_for_the_same_data_is_a_teacher(run_dir: Path, tmp_path: Path) -> None:
    from edgedistill.checkpoints import load_model_checkpoint, save_model_checkpoint

    student = load_model_checkpoint(run_dir / "student-best.pt")
    save_model_checkpoint(tmp_path / "cheap-teacher.pt", student)  # a cheap network passed as the teacher
    with pytest.raises(EdgeDistillError, match="not a standard-conv network"):
        export_bundle(run_dir, _options(tmp_path, teacher_checkpoint=str(tmp_path / "cheap-teacher.pt")))
    teacher = load_model_checkpoint(run_dir / "teacher-best.pt")
    teacher.data = {**teacher.data, "num_classes": 7}
    save_model_checkpoint(tmp_path / "other-data.pt", teacher)
    with pytest.raises(EdgeDistillError, match="trained for other data: num_classes 7"):
        export_bundle(run_dir, _options(tmp_path, teacher_checkpoint=str(tmp_path / "other-data.pt")))
    teacher_only = tmp_path / "teacher-run"
    teacher_only.mkdir()
    shutil.copy(run_dir / "teacher-best.pt", teacher_only)
    with pytest.raises(EdgeDistillError, match="--model teacher"):
        export_bundle(teacher_only, _options(tmp_path))
    assert not (tmp_path / "bundle").exists()
