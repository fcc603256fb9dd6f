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
from edgedistill.cheap.transform import CHEAP_KIND_REGISTRY, ConvSite
from edgedistill.models import ModelSpec, create_model

FAKE = "dilated-depthwise"


def _build(site: ConvSite, spec: CheapSpec) -> nn.Module:
    """A depthwise K×K conv with dilation 1 and 'same' padding, then 1×1: a kind of our own."""
    conv = site.conv
    k = site.kernel[0]
    spatial = nn.Conv2d(conv.in_channels, conv.in_channels, k, site.stride, k // 2, groups=conv.in_channels, bias=False)
    return _SpatialThenPointwise(spatial, nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None))


@pytest.fixture()
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CHEAP_KIND_REGISTRY, FAKE, CheapKind(FAKE, "test kind", _build))


def test_an_unknown_kind_is_an_error_never_another_kind() -> None:
    from edgedistill.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'group'"):
        CheapSpec("grop")
    assert cheap_kinds() == ["shift", "depthwise", "group"]


@pytest.mark.parametrize("kind", cheap_kinds())
def test_every_registered_kind_makes_a_smaller_student(kind: str) -> None:
    teacher = create_model(ModelSpec("resnet8", 10, 3))
    student = make_student(teacher, CheapSpec(kind))
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_a_kind_registered_elsewhere_trains_exports_and_benchmarks(fake_kind: None, tmp_path: Path) -> None:
    assert FAKE in run_cli(["train", "--help"]).stdout
    run = tmp_path / "run"
    trained = run_cli(["train", "--dataset", "digits", "--model", "resnet8", "--method", "mutual", "--kind", FAKE, "--epochs", "1",
                       "--limit", "200", "--threads", "1", "--out", str(run), "--quiet"])
    assert trained.exit_code == 0, trained.stderr
    bundle = tmp_path / "bundle"
    exported = run_cli(["export", str(run), "--out", str(bundle), "--parity-samples", "4", "--json"])
    assert exported.exit_code == 0, exported.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["models"]["student"]["cheap"]["kind"] == FAKE and manifest["models"]["student"]["parity"][0]["passed"]
    bench = run_cli(["bench", str(bundle), "--backend", "onnxruntime", "--no-memory", "--no-plot", "--runs", "5",
                     "--min-time", "0.05", "--repeats", "1", "--warmup-runs", "1", "--warmup-time", "0", "--json"])
    assert bench.exit_code == 0, bench.stderr
    assert {r["model"] for r in json.loads(bench.stdout)["documents"][0]["results"]} == {"student", "teacher"}


def test_a_kind_is_checked_where_it_is_named(tmp_path: Path) -> None:
    assert_one_error(run_cli(["train", "--kind", "shfit", "--out", "x"], cwd=tmp_path), "did you mean 'shift'")
    assert_one_error(run_cli(["train", "--kind", "group", "--groups", "1", "--out", "x"], cwd=tmp_path), "gives no saving")
