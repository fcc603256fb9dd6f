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


# -- an interrupted demo continues when run again ----------------------------------------------------


class _Stages:
    """Stand-ins for the three stages that record their calls (and can be told to stop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fake_train: bool = True) -> None:
        from edgedistill.commands import demo_cmd

        self.calls: list[str] = []
        self.stop_at: str | None = None
        if fake_train:
            monkeypatch.setattr(demo_cmd, "_train_stage", self._stage("train", lambda root, cfg: (root / "run").mkdir(exist_ok=True)))
        monkeypatch.setattr(demo_cmd, "_export_stage", self._stage("export", lambda root, target, backend, tune_trials: None))
        monkeypatch.setattr(demo_cmd, "_bench_stage", self._stage("bench", lambda root, threads, quick: None))

    def _stage(self, name: str, effect):  # noqa: ANN001, ANN202
        def run(*args):  # noqa: ANN002, ANN202
            self.calls.append(name)
            effect(*args)
            if name == self.stop_at:
                raise KeyboardInterrupt

        return run


def test_an_interrupted_demo_is_continued_by_the_same_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import assert_one_error, files_under, run_cli

    stages = _Stages(monkeypatch)
    stages.stop_at = "export"
    args = ["demo", "--out", "demo", "--limit", "64", "--backend", "onnxruntime"]
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert "error: demo interrupted during export" in result.stderr
    assert "continue it with the same command: edgedistill demo --out demo --backend onnxruntime --limit 64" in result.stderr
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["finished"] is False
    tuned = run_cli([*args, "--tune-trials", "8"], cwd=tmp_path)  # the command to continue keeps the tuning budget
    assert "continue it with the same command: edgedistill demo --out demo --backend onnxruntime --limit 64 --tune-trials 8" \
        in tuned.stderr
    # another demo's settings: refused, naming the command that continues this one
    other = run_cli(["demo", "--out", "demo", "--kind", "depthwise"], cwd=tmp_path)
    assert_one_error(other, "interrupted demo started with other settings", "--kind shift",
                     "edgedistill demo --out demo --backend onnxruntime --limit 64")
    stages.stop_at = None
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert stages.calls == ["train", "export", "train", "export", "train", "export", "bench"]
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["finished"] is True
    before = files_under(tmp_path)
    assert_one_error(run_cli(args, cwd=tmp_path), "already exists: it holds a finished demo")
    assert files_under(tmp_path) == before


def test_a_demo_stopped_before_writing_anything_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import files_under, run_cli

    stages = _Stages(monkeypatch)
    monkeypatch.setattr("edgedistill.commands.demo_cmd._train_stage", lambda root, cfg: (_ for _ in ()).throw(KeyboardInterrupt))
    result = run_cli(["demo", "--out", "demo"], cwd=tmp_path)
    assert result.exit_code == 130 and "demo interrupted during training" in result.stderr
    assert files_under(tmp_path) == set()
    assert stages.calls == []


@pytest.mark.skipif(not _fashion_mnist_installed(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_a_demo_interrupted_in_training_resumes_the_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import run_cli
    from edgedistill.distill.progress import RichEpochReporter

    stages = _Stages(monkeypatch, fake_train=False)
    end_epoch = RichEpochReporter.end_epoch

    def stop_after_first_epoch(self: RichEpochReporter, record: dict) -> None:
        end_epoch(self, record)
        raise KeyboardInterrupt  # the epoch's state is saved before the reporter hears of it

    monkeypatch.setattr(RichEpochReporter, "end_epoch", stop_after_first_epoch)
    args = ["demo", "--out", "demo", "--limit", "300", "--epochs", "2", "--threads", "1", "--backend", "onnxruntime"]
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert "demo interrupted during training (training interrupted in epoch 1/2" in result.stderr
    run = tmp_path / "demo" / "run"
    assert (run / "checkpoints" / "train-state.pt").is_file() and not (run / "summary.json").exists()
    monkeypatch.setattr(RichEpochReporter, "end_epoch", end_epoch)
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "continuing the interrupted training" in result.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2 and (run / "student-best.pt").is_file()
    assert stages.calls == ["export", "bench"]  # export and bench only once training is done
