"""The README's promise for train, eval, models and demo: every bad input ends with one ``error:``
line, a hint, exit status 2, no traceback, and nothing written. Every case fails before any
training (``--dataset digits`` where data must be read), so each takes well under a second or two."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_helpers import assert_one_error, files_under, run_cli
from edgedistill.checkpoints import load_model_checkpoint

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
D = ["--dataset", "digits"]

BAD_INPUT = [
    # train: names
    (["train", "--model", "online-teacher", *D], ["unknown model 'online-teacher'", "--method od"]),
    (["train", "--model", "resnet2O", *D], ["did you mean 'resnet20'"]),
    (["train", "--kind", "depthwsie", *D], ["did you mean 'depthwise'"]),
    (["train", "--method", "odd", *D], ["did you mean 'od'"]),
    (["train", "--dataset", "cifar-10"], ["did you mean 'cifar10'"]),
    (["train", "--keep", "layers.0.conv", *D], ["--keep layers.0.conv", "did you mean 'layers.0.conv"]),
    (["train", "--keep", "layers.0", *D], ["'layers.0' is a BasicBlock, not a conv"]),
    (["train", "--device", "gpu", *D], ["unknown device 'gpu'", "did you mean 'cuda'"]),
    pytest.param(["train", "--device", "cuda", *D], ["CUDA is not available"], marks=NO_CUDA),
    (["train", "-b", "64", *D], ["No such option '-b'"]),  # -b is --backend elsewhere; train says --batch-size
    (["train", "--config", "missing.yaml"], ["config file not found"]),
    # train: numbers
    (["train", "--threads", "-1", *D], ["--threads must be at least 1"]),
    (["train", "--threads", "0", *D], ["--threads must be at least 1"]),
    (["train", "--epochs", "0", *D], ["--epochs must be at least 1"]),
    (["train", "--epochs", "-1", *D], ["--epochs must be at least 1"]),
    (["train", "--batch-size", "0", *D], ["--batch-size must be at least 1"]),
    (["train", "--students", "0", *D], ["--students must be at least 1"]),
    (["train", "--lr", "-0.1", *D], ["--lr must be positive"]),
    (["train", "--lr", "0", *D], ["--lr must be positive"]),
    (["train", "--lr", "inf", *D], ["--lr must be a finite number"]),
    (["train", "--val-size", "inf", *D], ["--val-size must be a finite number"]),
    (["train", "--momentum", "-1", *D], ["--momentum"]),
    (["train", "--weight-decay", "-1", *D], ["--weight-decay"]),
    (["train", "--gamma", "0", *D], ["--gamma must be positive"]),
    (["train", "--temperature", "0", *D], ["--temperature must be positive"]),
    (["train", "--kl-weight", "-1", *D], ["--kl-weight"]),
    (["train", "--seed", "-1", *D], ["--seed"]),
    (["train", "--limit", "0", *D], ["--limit must be at least 1"]),
    (["train", "--limit", "-5", *D], ["--limit must be at least 1"]),
    (["train", "--image-size", "0", *D], ["--image-size must be at least 1"]),
    (["train", "--val-size", "-1", *D], ["--val-size"]),
    (["train", "--val-size", "1.5", *D], ["--val-size"]),
    (["train", "--val-size", "5000", *D], ["val_size 5000", "a count below"]),
    (["train", "--milestones", "0.5,2", *D], ["milestones are fractions"]),
    (["train", "--milestones", "half", *D], ["--milestones"]),
    (["train", "--kind", "group", "--groups", "1", *D], ["--groups 1 gives no saving"]),
    (["train", "--kind", "group", "--groups", "3", *D], ["not divisible by groups=3", "--groups 2", "--keep layers.0.conv1"]),
    (["train", "--limit", "100", *D], ["make no full batch of 128"]),
    # eval
    pytest.param(["eval", "run", "--device", "cuda"], ["CUDA is not available", "--device cpu"], marks=NO_CUDA),
    (["eval", "run", "--device", "gpu"], ["unknown device 'gpu'", "did you mean 'cuda'"]),
    (["eval", "run", "--limit", "-3"], ["--limit", "x>=1"]),
    (["eval", "run", "--limit", "0"], ["--limit", "x>=1"]),
    (["eval", "runs/[/x]"], ["runs/[/x]"]),  # a path that is rich markup, printed as written
    # models
    (["models", "--image-size", "0"], ["--image-size"]),
    (["models", "--image-size", "-1"], ["--image-size"]),
    (["models", "--in-channels", "0"], ["--in-channels"]),
    (["models", "--kind", "shfit"], ["did you mean 'shift'"]),
    (["models", "--kind", "group", "--groups", "1"], ["no saving"]),
    # demo
    (["demo", "--epochs", "0"], ["--epochs"]),
    (["demo", "--limit", "0"], ["--limit"]),
    (["demo", "--threads", "0"], ["--threads"]),
    (["demo", "--kind", "bad"], ["unknown cheap convolution kind 'bad'"]),
    (["demo", "--target", "nope"], ["unknown target 'nope'"]),
    (["demo", "--backend", "tflite"], ["unknown backend 'tflite'"]),
    (["demo", "--backend", "tensorrt"], ["does not support the tensorrt backend"]),
    (["demo", "--method", "alone"], ["--method"]),
]


@pytest.mark.parametrize(("args", "needles"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in
                         ("train", "eval", "models", "demo") else None)
def test_bad_input_is_one_error_with_a_hint_and_writes_nothing(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    result = run_cli(args, cwd=tmp_path)
    stderr = assert_one_error(result, *needles)
    assert "\nhint: " in stderr, stderr
    assert files_under(tmp_path) == set(), "a failed command left files behind"


# -- with a trained run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose student keeps one more conv standard, in a folder whose name is rich markup."""
    cwd = tmp_path_factory.mktemp("kept")
    out = Path("runs") / "[" / "x]"  # "runs/[/x]": a closing markup tag
    result = run_cli(["train", "--quiet", *D, "--model", "resnet8", "--method", "alone", "--epochs", "1", "--limit", "300",
                      "--batch-size", "64", "--threads", "1", "--keep", "layers.1.conv1", "--out", str(out)], cwd=cwd)
    assert result.exit_code == 0, result.output
    return cwd / out


def test_a_path_that_is_markup_is_printed_as_written(kept_run: Path) -> None:
    result = run_cli(["eval", str(kept_run), "--limit", "50"], cwd=kept_run.parents[2])
    assert result.exit_code == 0, result.output
    assert "[/x]/student-best.pt" in result.stdout.replace("\n", "")


def test_keep_is_saved_and_the_student_rebuilds_with_it(kept_run: Path) -> None:
    assert "keep:\n- layers.1.conv1\n" in (kept_run / "config.yaml").read_text()
    checkpoint = load_model_checkpoint(kept_run / "student-best.pt")
    assert checkpoint.spec.cheap is not None and checkpoint.spec.cheap.keep == ("layers.1.conv1",)
    student = checkpoint.build()  # what eval and export rebuild
    modules = dict(student.named_modules())
    assert type(modules["layers.1.conv1"]) is nn.Conv2d  # kept standard
    assert type(modules["layers.1.conv2"]) is not nn.Conv2d  # replaced
    assert "standard: layers.1.conv1" in checkpoint.spec.describe()


def test_a_corrupt_training_state_hints_something_else_than_the_command_that_failed(kept_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    state = run / "checkpoints" / "train-state.pt"
    state.write_bytes(state.read_bytes()[:500])
    before = files_under(tmp_path)
    result = run_cli(["train", "--quiet", "--resume", "--out", str(run)], cwd=tmp_path)
    stderr = assert_one_error(result, "training state", "another --out", f"delete {state}")
    hint = stderr.split("hint:", 1)[1]
    assert not hint.strip().startswith("retrain, or resume"), hint
    assert files_under(tmp_path) == before


def test_config_of_a_finished_run_repeats_it_in_a_new_run_directory(kept_run: Path, tmp_path: Path) -> None:
    cwd = kept_run.parents[2]
    before = set((cwd / "runs").iterdir())
    result = run_cli(["train", "--quiet", "--config", str(kept_run / "config.yaml")], cwd=cwd)
    assert result.exit_code == 0, result.output
    new = set((cwd / "runs").iterdir()) - before
    assert len(new) == 1, new
    (repeat,) = new
    assert "already holds a run, so this one goes to" in result.stderr and repeat.name in result.stderr
    assert (repeat / "student-best.pt").is_file()
    config = (repeat / "config.yaml").read_text()
    assert f"out: runs/{repeat.name}" in config and "- layers.1.conv1" in config
    # the same seed and settings: the same weights as the run it repeats
    a = load_model_checkpoint(kept_run / "student-last.pt").state_dict
    b = load_model_checkpoint(repeat / "student-last.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an explicit --out that holds a run is still refused
    result = run_cli(["train", "--quiet", "--config", str(kept_run / "config.yaml"), "--out", str(kept_run)], cwd=cwd)
    assert_one_error(result, "already holds a training run")


def test_demo_refuses_a_folder_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = files_under(tmp_path)
    result = run_cli(["demo", "--out", "mine"], cwd=tmp_path)
    assert_one_error(result, "not an edgedistill demo's output", "another --out")
    assert files_under(tmp_path) == before
