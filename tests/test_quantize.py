"""INT8 bundles (onnxruntime static quantization) and the measured accuracy of every artifact:
the quantized model is shipped beside the fp32 reference, bench and the device runner time it and
carry its own top-1, and every bad precision/calibration/evaluation input is one clean error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_error, files_under, run_cli
from deploy.bench import bench_bundle
from deploy.manifest import Bundle, load_manifest, verify_files
from deploy.measure import MeasureConfig
from deploy.report import format_table
from edgedistill.export.accuracy import drop_flags
from edgedistill.export.pipeline import ExportOptions, export_bundle
from edgedistill.export.quantize import recommended_settings
from edgedistill.export.targets import load_target

QUICK = MeasureConfig(warmup_runs=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0, repeats=1)


@pytest.fixture(scope="module")
def int8_bundle(mutual_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bundle"
    export_bundle(mutual_run, ExportOptions(out=str(out), precision="int8", parity_samples=8, calibration_samples=16,
                                            eval_limit=64))
    return out


@pytest.fixture(scope="module")
def fp32_bundle(mutual_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student alone, its accuracy measured on the run's whole test split."""
    out = tmp_path_factory.mktemp("fp32") / "bundle"
    export_bundle(mutual_run, ExportOptions(out=str(out), models=("student",), parity_samples=8))
    return out


def test_an_int8_bundle_ships_a_calibrated_qdq_model_beside_the_fp32_reference(int8_bundle: Path) -> None:
    manifest = load_manifest(int8_bundle)
    assert verify_files(int8_bundle, manifest) == len(manifest["files"])
    assert manifest["precision"] == "int8" and manifest["backend"] == "onnxruntime"
    calibration = manifest["calibration"]
    assert calibration["images"] == 16 and "digits train" in calibration["source"] and len(calibration["sha256"]) == 64
    for role in ("student", "teacher"):
        entry = manifest["models"][role]
        int8 = entry["artifacts"]["onnxruntime"]
        assert int8["path"] == f"models/{role}.int8.onnx" and int8["path"] in manifest["files"]
        assert (int8_bundle / entry["onnx"]).is_file()  # the fp32 parity reference stays
        graph = onnx.load(str(int8_bundle / int8["path"])).graph
        ops = {node.op_type for node in graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        conv_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
        assert conv_weights, "no int8 conv weights"
        quantization = int8["quantization"]
        assert quantization["format"] == "QDQ" and quantization["per_channel"] and quantization["weight_type"] == "int8"
        assert quantization["calibration_images"] == 16
        assert not [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4]
        # per-channel scales and int32 biases weigh a lot in a 12 k-parameter network: > 2x, not the ~4x of big ones
        assert int8["weight_bytes"] * 2 < int8["fp32_weight_bytes"]
        int8_parity = [p for p in entry["parity"] if p["candidate"] == "onnxruntime int8"]
        assert len(int8_parity) == 1 and int8_parity[0]["atol"] == 0.5  # judged with the int8 tolerance
        assert entry["parity"][0]["passed"]  # ... and the fp32 ONNX with the fp32 one, as before
    # the student's form was timed quantized: which form is fastest can change with precision
    assert manifest["models"]["student"]["lowering"]["how"].endswith(", int8") or \
        ", int8, " in manifest["models"]["student"]["lowering"]["how"]


def test_every_artifact_has_its_own_measured_top1_and_the_int8_one_its_drop(int8_bundle: Path) -> None:
    manifest = load_manifest(int8_bundle)
    assert manifest["evaluation"]["measured"] and manifest["evaluation"]["images"] == 64
    for role in ("student", "teacher"):
        measured = manifest["models"][role]["artifact_accuracy"]
        fp32, int8 = measured[f"models/{role}.onnx"], measured[f"models/{role}.int8.onnx"]
        assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
        for entry in (fp32, int8):
            assert entry["images"] == 64 and 0 <= entry["test_top1"] <= 1 and entry["correct"] == round(64 * entry["test_top1"])
            assert entry["measured_on"] and "digits test (64 images" in entry["split"]
        assert int8["drop_pt"] == pytest.approx(100 * (fp32["test_top1"] - int8["test_top1"]), abs=1e-3)
        assert "flagged" in int8
        # the checkpoint's own figure is kept beside it, untouched
        assert manifest["models"][role]["accuracy"]["test_top1"] is not None


def test_fp32_artifact_top1_on_the_run_split_equals_the_checkpoint(fp32_bundle: Path) -> None:
    entry = load_manifest(fp32_bundle)["models"]["student"]
    measured = entry["artifact_accuracy"]["models/student.onnx"]
    assert "the run's split" in measured["split"]
    assert abs(measured["test_top1"] - entry["accuracy"]["test_top1"]) <= 0.0005
    assert measured["vs_checkpoint_pt"] == pytest.approx(0, abs=0.05)


def test_bench_times_the_int8_model_and_carries_its_accuracy(int8_bundle: Path) -> None:
    bundle = Bundle.load(int8_bundle)
    document = bench_bundle(bundle, "onnxruntime", ["student", "teacher"], 1, QUICK, memory=False)
    assert [(r["model"], r["precision"]) for r in document["results"]] == [
        ("student", "fp32"), ("student", "int8"), ("teacher", "fp32"), ("teacher", "int8")]  # side by side, one run
    for row in document["results"]:
        measured = bundle.model(row["model"])["artifact_accuracy"][row["artifact"]]
        suffix = ".int8.onnx" if row["precision"] == "int8" else ".onnx"
        assert row["artifact"] == f"models/{row['model']}{suffix}" and measured["precision"] == row["precision"]
        assert row["accuracy"]["test_top1"] == measured["test_top1"]
        assert row["accuracy_source"]["measured"] == "artifact" and row["accuracy_source"]["images"] == 64
    fp32 = bench_bundle(bundle, "onnxruntime", ["student"], 1, QUICK, memory=False, precision="fp32")["results"][0]
    assert fp32["artifact"] == "models/student.onnx" and fp32["precision"] == "fp32"


def test_edgedistill_bench_reports_int8_rows_with_their_accuracy(int8_bundle: Path, tmp_path: Path) -> None:
    result = run_cli(["bench", str(int8_bundle), "--backend", "onnxruntime", "--model", "student", "--no-memory", "--runs", "3",
                      "--min-time", "0", "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--no-plot",
                      "--out", str(tmp_path / "report"), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["precision"]: row for row in report["documents"][0]["results"]}
    assert set(rows) == {"fp32", "int8"}  # the fp32 reference and the int8 model, timed side by side in one run
    assert rows["int8"]["artifact"].endswith(".int8.onnx") and rows["fp32"]["artifact"] == "models/student.onnx"
    assert all(row["accuracy_source"]["measured"] == "artifact" for row in rows.values())
    markdown = next((tmp_path / "report").glob("*/report.md")).read_text()
    assert "| int8 |" in markdown and "| fp32 |" in markdown and "measured by edgedistill export" in markdown


def test_student_and_teacher_are_compared_at_each_precision(int8_bundle: Path, tmp_path: Path) -> None:
    result = run_cli(["bench", str(int8_bundle), "--backend", "onnxruntime", "--no-memory", "--runs", "3", "--min-time", "0",
                      "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--out", str(tmp_path / "report"), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["documents"][0]["results"]) == 4  # student and teacher, fp32 and int8, one interleaved run
    assert sorted(c["backend"] for c in report["comparisons"]) == ["onnxruntime", "onnxruntime int8"]
    table = format_table(report["documents"][0])  # the device runner's table pairs them the same way
    assert "student over the teacher (onnxruntime) " in table and "student over the teacher (onnxruntime int8) " in table
    assert next((tmp_path / "report").glob("*/accuracy-latency.png")).stat().st_size > 0


def test_the_device_runner_times_the_int8_model_without_torch(int8_bundle: Path) -> None:
    code = ("import sys, json; from deploy.run import main; "
            "rc = main(['bench', '--model', 'student', '--no-memory', '--runs', '3', '--min-time', '0', '--repeats', '1', "
            "'--warmup-runs', '1', '--warmup-time', '0', '--json', '--out', 'results/test.json']); "
            "assert rc == 0; "
            "print('LEAKED', [m for m in sys.modules if m.split('.')[0] in ('torch', 'edgedistill')])")
    done = subprocess.run([sys.executable, "-c", code], cwd=int8_bundle, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LEAKED []" in done.stdout, done.stdout
    rows = {r["precision"]: r for r in json.loads((int8_bundle / "results" / "test.json").read_text())["results"]}
    assert set(rows) == {"fp32", "int8"}  # the device times the int8 model beside its fp32 reference too
    row = rows["int8"]
    assert row["artifact"] == "models/student.int8.onnx"
    assert row["accuracy_source"]["measured"] == "artifact"


def test_asking_the_device_for_a_precision_the_bundle_lacks_is_one_error(fp32_bundle: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "deploy.run", "bench", "--precision", "int8", "--no-memory"],
                          cwd=fp32_bundle, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [done.stderr.strip().splitlines()[0]]
    assert "no int8 onnxruntime model" in done.stderr and "--precision int8" in done.stderr


def test_without_evaluation_bench_says_the_accuracy_is_the_checkpoints(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), models=("student",), parity_samples=4, eval_limit=0))
    manifest = load_manifest(Path(summary.bundle))
    assert manifest["evaluation"] == {"measured": False, "why": "--eval-limit 0"} and summary.evaluation is None
    assert manifest["models"]["student"]["artifact_accuracy"] is None
    row = bench_bundle(Bundle.load(Path(summary.bundle)), "onnxruntime", ["student"], 1, QUICK, memory=False)["results"][0]
    assert row["accuracy"] == manifest["models"]["student"]["accuracy"] and row["accuracy_source"] == {"measured": "checkpoint"}


def test_a_quantized_artifact_that_loses_too_much_is_flagged() -> None:
    entries = {"a.onnx": {"precision": "fp32", "test_top1": 0.90}, "a.int8.onnx": {"precision": "int8", "test_top1": 0.87}}
    flags = drop_flags(entries, "a.onnx", max_drop_pt=1.0)
    assert entries["a.int8.onnx"]["drop_pt"] == pytest.approx(3.0) and len(flags) == 1
    assert "3.00 pt below" in entries["a.int8.onnx"]["flagged"] and "--max-accuracy-drop 1" in flags[0]
    assert drop_flags(entries, "a.onnx", max_drop_pt=5.0) == [] and entries["a.int8.onnx"]["flagged"] is None


def test_quantization_settings_follow_the_target_cpu() -> None:
    from deploy.manifest import cpu_flags

    avx2, avx512, rpi4, host = (recommended_settings(load_target(t)) for t in ("x86-avx2", "x86-avx512", "rpi4", "host"))
    assert (avx2.activation_type, avx2.weight_type, avx2.reduce_range) == ("uint8", "int8", True)  # no VNNI: saturation
    assert avx512.reduce_range  # the x86-avx512 target promises AVX-512 F/BW/CD/DQ/VL, not VNNI
    assert (rpi4.activation_type, rpi4.reduce_range) == ("int8", False)
    has_vnni = bool((cpu_flags() or set()) & {"avx512_vnni", "avx_vnni"})
    if load_target("host").arch == "x86_64":
        assert host.reduce_range is (not has_vnni)
    assert all(s.per_channel and s.method == "minmax" for s in (avx2, avx512, rpi4, host))


def test_tensorrt_takes_the_precision_flag(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), target="xavier", models=("student",),
                                                      precision="int8", parity_samples=4, calibration_samples=16, eval_limit=16))
    manifest = load_manifest(Path(summary.bundle))
    trt = manifest["models"]["student"]["artifacts"]["tensorrt"]
    assert manifest["precision"] == "int8" and trt["precision"] == "int8" and trt["engine"] == "models/student.int8.engine"
    assert np.load(Path(summary.bundle) / manifest["calibration"]["path"]).shape[0] == 16
    assert list(manifest["models"]["student"]["artifact_accuracy"]) == ["models/student.onnx"]
    assert manifest["models"]["student"]["lowering"]["how"].startswith(
        "not measured (the tensorrt backend builds its code on the device): onehot, never measured with tensorrt")


def test_an_fp16_bundle_for_a_cpu_with_fp16_arithmetic(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), target="rpi5", backend="onnxruntime",
                                                      models=("student",), precision="fp16", parity_samples=8, eval_limit=64))
    bundle = Path(summary.bundle)
    manifest = load_manifest(bundle)
    assert verify_files(bundle, manifest) == len(manifest["files"]) and manifest["precision"] == "fp16"
    entry = manifest["models"]["student"]
    fp16 = entry["artifacts"]["onnxruntime"]
    assert fp16["path"] == "models/student.fp16.onnx" and fp16["precision"] == "fp16"
    assert "convert_float_to_float16" in fp16["conversion"]["tool"] and "device" in fp16["verified"]
    assert 1.8 < fp16["fp32_weight_bytes"] / fp16["weight_bytes"] <= 2.0
    graph = onnx.load(str(bundle / fp16["path"])).graph
    floats = {i.data_type for i in graph.initializer if len(i.dims) == 4}
    assert floats == {onnx.TensorProto.FLOAT16}
    assert [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)] == [onnx.TensorProto.FLOAT] * 2
    parity = [p for p in entry["parity"] if p["candidate"] == "onnxruntime fp16"]
    assert parity and parity[0]["max_abs_diff"] < 0.05
    measured = entry["artifact_accuracy"]
    assert measured["models/student.fp16.onnx"]["precision"] == "fp16"
    assert abs(measured["models/student.fp16.onnx"]["drop_pt"]) <= 2.0  # 64 images: one image is 1.6 pt
    assert entry["lowering"]["how"].startswith("not measured")  # an aarch64 board, no tracker


@pytest.mark.parametrize(("args", "needles"), [
    (["--precision", "int8", "--backend", "tvm"], ["fake int8", "--backend onnxruntime"]),
    (["--precision", "fp16"], ["--precision fp16 is not available with the onnxruntime backend for target host",
                               "no fp16 arithmetic on x86_64", "rpi5"]),
    (["--precision", "fp16", "--target", "rpi4", "--backend", "onnxruntime"], ["rpi4's CPU has no fp16 arithmetic", "asimdhp", "use --precision fp32 or int8"]),
    (["--precision", "int4"], ["int4"]),
    (["--precision", "int8", "--calibration-samples", "4"], ["too few to calibrate int8", "16 or more"]),
    (["--calibration-method", "entropy"], ["applies to --precision int8 only"]),
    (["--eval-limit", "-1"], ["--eval-limit"]),
    (["--max-accuracy-drop", "-1"], ["--max-accuracy-drop"]),
])
def test_bad_precision_input_gives_one_clear_error(mutual_run: Path, tmp_path: Path, args: list[str], needles: list[str]) -> None:
    result = run_cli(["export", str(mutual_run), "--out", "b", *args], cwd=tmp_path)
    assert_one_error(result, *needles)
    assert files_under(tmp_path) == set()


def test_the_bundle_carries_a_seeded_test_subset_and_the_device_measures_it(int8_bundle: Path) -> None:
    manifest = load_manifest(int8_bundle)
    device = manifest["device_eval"]
    assert device["count"] == 300 and device["seed"] == 0  # the digits run's whole test split is under 1000 images
    for name in (device["images"], device["labels"]):
        assert manifest["files"][name] == device["sha256"][name]
    images = np.load(int8_bundle / device["images"])
    assert images.dtype == np.uint8 and images.shape == (300, 1, 32, 32)
    code = ("import sys; from deploy.run import main; "
            "rc = main(['eval', '--out', 'results/eval.json']); assert rc == 0; "
            "print('LEAKED', [m for m in sys.modules if m.split('.')[0] in ('torch', 'edgedistill')])")
    done = subprocess.run([sys.executable, "-c", code], cwd=int8_bundle, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LEAKED []" in done.stdout and "top-1 here" in done.stdout, done.stdout
    document = json.loads((int8_bundle / "results" / "eval.json").read_text())
    assert document["format"] == "edgedistill-eval/1"
    for row in document["results"]:
        assert row["precision"] == "int8" and row["images"] == 300
        measured = manifest["models"][row["model"]]["artifact_accuracy"][row["artifact"]]
        assert row["export_top1"] == measured["device_subset_top1"] and row["delta_pt"] == 0  # same images, same code


def test_device_eval_of_a_bundle_without_a_subset_is_one_error(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), models=("student",), parity_samples=4,
                                                      eval_limit=16, device_eval_samples=0))
    assert load_manifest(Path(summary.bundle))["device_eval"] is None
    done = subprocess.run([sys.executable, "-m", "deploy.run", "eval"], cwd=summary.bundle, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no test subset" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_bench_import_puts_the_devices_own_top1_on_the_rows_of_that_artifact(int8_bundle: Path, tmp_path: Path) -> None:
    evaluation = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, "-m", "deploy.run", "eval", "--limit", "50", "--out", str(evaluation)], cwd=int8_bundle,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    device = {r["artifact"]: r["test_top1"] for r in json.loads(evaluation.read_text())["results"]}
    result = run_cli(["bench", str(int8_bundle), "--backend", "onnxruntime", "--no-memory", "--no-plot", "--runs", "3", "--min-time",
                      "0.01", "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--import", str(evaluation),
                      "--out", str(tmp_path / "report"), "--json"])
    assert result.exit_code == 0, result.stderr
    rows = [r for d in json.loads(result.stdout)["documents"] for r in d["results"]]
    assert set(device) == {r["artifact"] for r in rows if r["precision"] == "int8"}  # eval measured the bundle's int8 models
    for row in rows:
        if row["artifact"] in device:
            assert row["accuracy"]["test_top1"] == device[row["artifact"]]
            assert row["accuracy_source"]["by"] == "deploy.run eval" and row["accuracy_source"]["images"] == 50
        else:  # the fp32 rows keep the figure export measured on them
            assert row["accuracy_source"]["measured"] == "artifact" and "by" not in row["accuracy_source"]
    markdown = next((tmp_path / "report").glob("*/report.md")).read_text()
    assert "measured by deploy.run eval on the bundle's test subset" in markdown
    # an evaluation of another bundle sits beside no row: an error, not a figure silently dropped
    other = json.loads(evaluation.read_text())
    other["bundle"]["created"] = "2000-01-01T00:00:00Z"
    stray = tmp_path / "other.json"
    stray.write_text(json.dumps(other))
    assert_one_error(run_cli(["bench", str(int8_bundle), "--backend", "onnxruntime", "--no-memory", "--no-plot", "--runs", "3",
                              "--min-time", "0.01", "--repeats", "1", "--import", str(stray), "--out", str(tmp_path / "r2")]),
                     "matches no timed artifact")
