"""A cheap-conv kind is one registry entry: a kind registered here is trained, exported and
benchmarked without any other file knowing it; an unknown kind never falls through to another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from cli_helpers import assert_one_error, run_cli
from edgedistill.cheap import CheapKind, CheapSpec, cheap_kinds, make_student
from edgedistill.cheap.modules import _SpatialThenPointwise
from edgedistill.cheap.kinds import CHEAP_KIND_REGISTRY, ConvSite, KindOption
from edgedistill.errors import EdgeDistillError, UnknownNameError
from edgedistill.models import ModelSpec, create_model

FAKE = "dilated-depthwise"


def _build(site: ConvSite, spec: CheapSpec) -> nn.Module:
    """A depthwise K×K conv with --dilation D and 'same' padding, then 1×1: a kind of our own."""
    conv, d = site.conv, spec.option("dilation")
    k = site.kernel[0]
    spatial = nn.Conv2d(conv.in_channels, conv.in_channels, k, site.stride, d * (k // 2), dilation=d, groups=conv.in_channels,
                        bias=False)
    return _SpatialThenPointwise(spatial, nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None))


DILATION = KindOption("dilation", 1, "Dilation of the depthwise conv.", check=lambda d: "must be 1 or more" if d < 1 else None,
                      fix="use --dilation 1 or more", label="d")


@pytest.fixture()
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CHEAP_KIND_REGISTRY, FAKE, CheapKind(FAKE, "test kind", _build, options=(DILATION,)))


def test_an_unknown_kind_is_an_error_never_another_kind() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'group'"):
        CheapSpec("grop")
    assert cheap_kinds() == ["shift", "depthwise", "group"]


@pytest.mark.parametrize("kind", cheap_kinds())
def test_every_registered_kind_makes_a_smaller_student(kind: str) -> None:
    teacher = create_model(ModelSpec("resnet8", 10, 3))
    student = make_student(teacher, CheapSpec(kind))
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_a_kind_registered_elsewhere_trains_exports_and_benchmarks(fake_kind: None, tmp_path: Path) -> None:
    for command in ("train", "models"):  # the kind and its option's flag, without editing the CLI
        shown = run_cli([command, "--help"]).stdout
        assert FAKE in shown and "--dilation" in shown, command
    run = tmp_path / "run"
    trained = run_cli(["train", "--dataset", "digits", "--model", "resnet8", "--method", "mutual", "--kind", FAKE, "--dilation", "2",
                       "--epochs", "1", "--limit", "200", "--threads", "1", "--out", str(run), "--quiet"])
    assert trained.exit_code == 0, trained.stderr
    assert "dilation: 2" in (run / "config.yaml").read_text()  # the option is a config setting too
    bundle = tmp_path / "bundle"
    exported = run_cli(["export", str(run), "--out", str(bundle), "--parity-samples", "4", "--json"])
    assert exported.exit_code == 0, exported.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    student = manifest["models"]["student"]
    assert student["cheap"] == {"kind": FAKE, "dilation": 2} and student["parity"][0]["passed"]
    assert f"{FAKE}, d=2" in student["model"]  # the checkpoint rebuilt the student with its option
    bench = run_cli(["bench", str(bundle), "--backend", "onnxruntime", "--no-memory", "--no-plot", "--runs", "5",
                     "--min-time", "0.05", "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--json"])
    assert bench.exit_code == 0, bench.stderr
    assert {r["model"] for r in json.loads(bench.stdout)["documents"][0]["results"]} == {"student", "teacher"}


def test_a_kind_is_checked_where_it_is_named(tmp_path: Path) -> None:
    assert_one_error(run_cli(["train", "--kind", "shfit", "--out", "x"], cwd=tmp_path), "did you mean 'shift'")
    assert_one_error(run_cli(["train", "--kind", "group", "--groups", "1", "--out", "x"], cwd=tmp_path), "gives no saving")


def test_a_kind_option_is_checked_once_for_every_entry_point(fake_kind: None, tmp_path: Path) -> None:
    for command in (["train", "--out", "x"], ["models"]):
        assert_one_error(run_cli([*command, "--kind", FAKE, "--dilation", "0"], cwd=tmp_path), "--dilation 0 must be 1 or more")
        assert_one_error(run_cli([*command, "--kind", "shift", "--dilation", "3"], cwd=tmp_path),
                         f"--dilation applies to --kind {FAKE}, not shift")
        assert_one_error(run_cli([*command, "--kind", FAKE, "--dilation", "1.5"], cwd=tmp_path), "--dilation must be a whole number")
    assert not (tmp_path / "x").exists()
    with pytest.raises(EdgeDistillError, match=f"cheap kind '{FAKE}' has no option 'groups'"):
        CheapSpec(FAKE, groups=4)
