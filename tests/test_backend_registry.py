"""A backend is one entry per side: a fake one, registered here, goes through export --help,
export, bench and the device runner without any other file knowing it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import run_cli
from deploy import backends as device
from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from deploy.manifest import load_manifest
from edgedistill import backends as host
from edgedistill.backends.base import BuildContext, CompileJob

FAKE = "onnxcopy"


def _compile(ctx: BuildContext, job: CompileJob) -> tuple[dict, int]:
    """The 'compiled' artifact is a copy of the verified ONNX file."""
    path = ctx.root / "models" / f"{job.role}.{FAKE}.onnx"
    shutil.copyfile(job.onnx_path, path)
    ctx.notes.append(f"{job.role}: copied by the {FAKE} backend")
    return {FAKE: {"path": f"models/{path.name}"}}, path.stat().st_size


def _artifact(bundle, model: str, precision: str | None) -> Path:  # noqa: ANN001 - deploy.manifest.Bundle
    return bundle.path(bundle.model(model)["artifacts"][FAKE]["path"])


@pytest.fixture()
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(host.HOST_BACKENDS, FAKE, host.HostBackend(
        name=FAKE, summary="a copy of the ONNX file, run by onnxruntime", options=frozenset({"tuning_dir"}), compile=_compile))
    monkeypatch.setitem(device.DEVICE_BACKENDS, FAKE, device.DeviceBackend(
        name=FAKE, description="test backend", runtime_module="onnxruntime", install="pip install onnxruntime",
        requirements=("numpy", "onnxruntime"), open=lambda path, threads, options: OnnxRuntimeRunner(path, threads),
        artifact=_artifact))
    yield


def _target_file(tmp_path: Path) -> Path:
    text = run_cli(["targets", "--show", "host"]).stdout
    path = tmp_path / "fake-host.toml"
    path.write_text(text.replace('name = "host"', 'name = "fake-host"').replace('aliases = ["local", "native"]', "aliases = []")
                    .replace('backends = ["onnxruntime", "tvm"]', f'backends = ["{FAKE}", "onnxruntime"]'))
    return path


def test_a_backend_registered_elsewhere_goes_through_export_bench_and_the_device_runner(
        fake_backend: None, mutual_run: Path, tmp_path: Path) -> None:
    assert FAKE in run_cli(["export", "--help"]).stdout and FAKE in run_cli(["bench", "--help"]).stdout

    target = _target_file(tmp_path)
    bundle = tmp_path / "bundle"
    result = run_cli(["export", str(mutual_run), "--target", str(target), "--out", str(bundle), "--parity-samples", "4",
                      "--lowering", "trained"])
    assert result.exit_code == 0, result.stderr
    manifest = load_manifest(bundle)
    assert manifest["backend"] == FAKE and manifest["models"]["student"]["artifacts"][FAKE]["path"] == f"models/student.{FAKE}.onnx"
    assert (bundle / "requirements.txt").read_text() == "numpy\nonnxruntime\n"
    assert any(FAKE in note for note in manifest["notes"])

    # an option only another backend reads is refused, naming that backend
    refused = run_cli(["export", str(mutual_run), "--target", str(target), "--out", str(tmp_path / "x"), "--tune-trials", "4"])
    assert refused.exit_code == 2 and "--tune-trials applies to the tvm backend only, not onnxcopy" in refused.stderr

    bench = run_cli(["bench", str(bundle), "--backend", FAKE, "--no-memory", "--no-plot", "--runs", "5", "--min-time", "0.05",
                     "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--json"])
    assert bench.exit_code == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert [{r["backend"] for r in d["results"]} for d in report["documents"]] == [{FAKE}]
    assert [c["backend"] for c in report["comparisons"]] == [FAKE]

    from deploy.run import main as device_main

    out = tmp_path / "device.json"
    code = device_main(["bench", "--bundle", str(bundle), "--no-memory", "--runs", "5", "--min-time", "0.05", "--repeats", "1",
                        "--warmup-runs", "1", "--warmup-time", "0", "--out", str(out)])
    document = json.loads(out.read_text())
    assert code == 0 and {r["backend"] for r in document["results"]} == {FAKE}  # the bundle's own backend by default
    assert {r["model"] for r in document["results"]} == {"student", "teacher"}


def test_every_backend_has_both_halves() -> None:
    assert set(host.backend_names()) == set(device.backend_names())
    for name in host.backend_names():
        assert host.get_backend(name).summary and device.get_backend(name).requirements


def _target_for(backend: str) -> str:
    """A shipped target that lists ``backend``, this machine's own when it does."""
    from edgedistill.export.targets import list_targets, load_target

    if backend in load_target("host").backends:
        return "host"
    return next(t.name for t in list_targets() if backend in t.backends)


@pytest.mark.parametrize("backend", host.backend_names())
def test_every_registered_backend_exports_and_runs_where_it_can(backend: str, mutual_run: Path, tmp_path: Path) -> None:
    from deploy.manifest import Bundle
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    summary = export_bundle(mutual_run, ExportOptions(target=_target_for(backend), backend=backend, out=str(tmp_path / "b"),
                                                      models=("student",), parity_samples=4, calibration_samples=8,
                                                      lowering="trained"))
    bundle = Bundle.load(Path(summary.bundle), force=True)
    assert bundle.manifest["backend"] == backend
    assert (Path(summary.bundle) / "requirements.txt").read_text().splitlines() == list(device.get_backend(backend).requirements)
    ok, why, hint = host.get_backend(backend).runs_here(bundle)
    if not ok:
        assert why and hint  # a backend that cannot run here says why and what to do instead
        return
    bench = run_cli(["bench", summary.bundle, "--backend", backend, "--model", "student", "--no-memory", "--no-plot",
                     "--runs", "5", "--min-time", "0.05", "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--json"])
    assert bench.exit_code == 0, bench.stderr
    (document,) = json.loads(bench.stdout)["documents"]
    assert [r["backend"] for r in document["results"]] == [backend]
