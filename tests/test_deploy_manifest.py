"""deploy.manifest: hash verification, target check, artifact paths."""

from __future__ import annotations

import json

import pytest
from test_deploy_helpers import export_cnn, make_bundle

from deploy.errors import DeployError
from deploy.manifest import Bundle, check_target, required_cpu_flags, target_arch, verify_files


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return export_cnn(tmp_path_factory.mktemp("model") / "m.onnx", depthwise=True)


@pytest.fixture
def bundle_dir(tmp_path, onnx_model):
    return make_bundle(tmp_path / "bundle", {"student": onnx_model, "teacher": onnx_model})


def test_intact_bundle_verifies_every_listed_file(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    count = verify_files(bundle_dir, bundle.manifest)
    assert count == len(bundle.manifest["files"])
    assert "models/student.onnx" in bundle.manifest["files"]
    assert any(name.startswith("deploy/") for name in bundle.manifest["files"])
    assert bundle.model_names() == ["student", "teacher"]
    assert bundle.artifact_path("student", "onnxruntime") == bundle_dir.resolve() / "models" / "student.onnx"


def test_tampered_file_is_named(bundle_dir):
    path = bundle_dir / "models" / "teacher.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DeployError, match=r"models/teacher\.onnx does not match its SHA-256"):
        Bundle.load(bundle_dir)


def test_missing_file_and_unsafe_paths_are_refused(bundle_dir):
    (bundle_dir / "models" / "student.onnx").unlink()
    with pytest.raises(DeployError, match=r"models/student\.onnx is missing"):
        Bundle.load(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"] = {"../outside": "0" * 64}
    with pytest.raises(DeployError, match="unsafe path"):
        verify_files(bundle_dir, manifest)


def test_wrong_format_or_no_manifest(tmp_path, bundle_dir):
    with pytest.raises(DeployError, match="no manifest.json"):
        Bundle.load(tmp_path / "empty")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["format"] = "something-else/9"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="expected 'edgedistill-bundle/1'"):
        Bundle.load(bundle_dir)


def test_aarch64_bundle_is_refused_on_x86_unless_forced(tmp_path, onnx_model):
    root = make_bundle(tmp_path / "arm", {"student": onnx_model}, target="rpi4")
    with pytest.raises(DeployError, match=r"target 'rpi4' \(aarch64\) but this machine is x86_64"):
        check_target(json.loads((root / "manifest.json").read_text()), machine="x86_64")
    check_target(json.loads((root / "manifest.json").read_text()), machine="arm64")  # alias of aarch64
    assert Bundle.load(root, force=True).target_name == "rpi4"


def test_the_device_reads_the_target_record_the_exporter_wrote():
    from edgedistill.export.targets import list_targets

    for target in list_targets():  # every shipped target, as export writes it into a manifest
        assert target_arch(target.raw) == target.arch
        assert required_cpu_flags(target.raw) == sorted(target.cpu_flags)
    assert target_arch({"arch": "amd64"}) == "x86_64"
    assert target_arch({"name": "mystery"}) is None


def test_cpu_features_the_target_needs():
    from edgedistill.export.targets import load_target

    manifest = {"target": load_target("x86-avx512").raw}
    check_target(manifest, machine="x86_64", flags={"avx2", "fma", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
    with pytest.raises(DeployError, match="lacks avx512bw"):
        check_target(manifest, machine="x86_64", flags={"avx2", "fma", "avx512f", "avx512cd", "avx512dq", "avx512vl"})


def test_tensorrt_engine_path_and_missing_artifacts(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    assert bundle.engine_path("student").name == "student.fp16.engine"
    assert bundle.engine_path("student", "int8").name == "student.int8.engine"
    with pytest.raises(DeployError, match="build-engine"):
        bundle.artifact_path("student", "tensorrt")
    with pytest.raises(DeployError, match="no TVM artifact"):
        bundle.artifact_path("student", "tvm")
    with pytest.raises(DeployError, match="no studnet model"):
        bundle.model_names("studnet")
