"""Equivalent deployment forms of the cheap layers, and export choosing among them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cli_helpers import assert_one_error, run_cli
from deploy.manifest import load_manifest
from edgedistill.cheap import CheapSpec
from edgedistill.export import lowering
from edgedistill.export.pipeline import ExportOptions, export_bundle
from edgedistill.models import ModelSpec, complexity, create_model

KINDS = ("shift", "depthwise", "group")


def _student(kind: str, arch: str = "resnet8") -> torch.nn.Module:
    model = create_model(ModelSpec(arch, 10, 3, cheap=CheapSpec(kind))).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", lowering.lowering_names())
def test_every_form_computes_what_the_trained_network_computes(kind: str, form: str) -> None:
    model = _student(kind)
    lowered, layers = lowering.lower(model, form)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), atol=1e-5, rtol=1e-5)
    changes = form == "folded" or (form in ("onehot", "fused") and kind == "shift")
    assert (layers > 0) == changes
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in _student(kind).parameters())  # model untouched


def test_a_strided_and_a_padded_layer_fold_exactly() -> None:
    from edgedistill.cheap.modules import GroupConv2d, ShiftConv2d

    for layer in (ShiftConv2d(18, 8, 3, stride=2), GroupConv2d(16, 8, 3, stride=2, padding=1, groups=4)):
        layer.eval()
        x = torch.randn(1, layer.in_channels, 9, 9)
        folded = lowering.LOWERINGS["folded"].rewrite(layer)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), layer(x), atol=1e-5, rtol=1e-5)


def test_a_teacher_has_one_form_and_executed_macs_are_counted() -> None:
    teacher = create_model(ModelSpec("resnet8", 10, 3)).eval()
    assert lowering.candidate_forms(teacher) == ["trained"]
    shift = _student("shift")
    assert lowering.candidate_forms(shift) == ["trained", "onehot", "folded"]
    assert lowering.candidate_forms(shift, "tvm") == ["trained", "onehot", "folded", "fused"]  # TVM's own form
    assert lowering.candidate_forms(teacher, "tvm") == ["trained"]
    nominal = complexity(shift, (1, 3, 32, 32)).macs
    onehot = complexity(lowering.lower(shift, "onehot")[0], (1, 3, 32, 32)).macs
    folded = complexity(lowering.lower(shift, "folded")[0], (1, 3, 32, 32)).macs
    assert nominal < onehot < folded == complexity(teacher, (1, 3, 32, 32)).macs
    # TVM's fused kernel compiles the one-hot graph but executes the trained arithmetic (shifts are addresses).
    assert lowering.fixed_choice(shift, "fused", "").executed_macs((1, 3, 32, 32)) == nominal


def test_export_ships_the_requested_form_and_records_it(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), models=("student",), parity_samples=8,
                                                      lowering="onehot"))
    entry = load_manifest(Path(summary.bundle))["models"]["student"]
    assert entry["lowering"]["form"] == "onehot" and entry["lowering"]["how"] == "requested"
    assert entry["executed_macs"] > entry["macs"] and entry["parity"][0]["passed"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / entry["onnx"])).graph.node}
    assert "Slice" not in ops and "Concat" not in ops  # no shifted copies left


def test_auto_times_each_form_keeps_the_fastest_and_caches_the_choice(
        mutual_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "a"), models=("student",), parity_samples=8))
    chosen = load_manifest(Path(first.bundle))["models"]["student"]["lowering"]
    assert chosen["how"].startswith("measured on this machine with onnxruntime")
    times = chosen["candidates_median_ms"]
    assert set(times) == {"trained", "onehot", "folded"} and chosen["form"] == min(times, key=times.get)
    assert len(list((tmp_path / "cache" / "edgedistill" / "lowering").glob("*.json"))) == 1
    second = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), models=("student",), parity_samples=8))
    again = load_manifest(Path(second.bundle))["models"]["student"]["lowering"]
    assert again["form"] == chosen["form"] and again["how"].startswith("cached: ")
    assert not list(Path(first.bundle).rglob("*lowering*"))  # the candidates' scratch files are gone


def test_tvm_times_its_own_forms_while_the_graph_keeps_onnxruntimes(
        mutual_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from edgedistill.backends.tvm import compile as compile_module

    compiles: list[str] = []
    monkeypatch.setattr(compile_module, "compile_onnx", _counting(compile_module.compile_onnx, compiles))
    messages: list[str] = []
    summary = export_bundle(mutual_run, ExportOptions(out=str(tmp_path / "b"), backend="tvm", models=("student",),
                                                      parity_samples=4, eval_limit=0), messages.append)
    assert len(compiles) == 4  # one per form, to time it; the chosen one is shipped, not compiled again
    assert any("compiled to time it: shipping it" in m for m in messages)
    entry = load_manifest(Path(summary.bundle))["models"]["student"]
    graph, library = entry["lowering"], entry["artifacts"]["tvm"]["lowering"]
    assert graph["how"].startswith("measured on this machine with onnxruntime")
    assert library["how"].startswith("measured on this machine with TVM (untuned)")
    times = library["candidates_median_ms"]
    assert set(times) == {"trained", "onehot", "folded", "fused"} and library["form"] == min(times, key=times.get)
    assert entry["artifacts"]["tvm"]["executed_macs"] >= entry["macs"]
    assert all(p["passed"] for p in entry["parity"])  # the library, whatever its form, matches the graph
    assert summary.models[0].lowering.startswith(graph["form"])
    assert not [p for p in Path(summary.bundle).rglob("*") if p.name.startswith((".tvm-form-", ".lowering-", ".tvm-timed"))]
    assert len(list((tmp_path / "cache" / "edgedistill" / "lowering").glob("*.json"))) == 2  # one choice per backend


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(args[0])
        return function(*args, **kwargs)
    return counted


def test_a_target_that_cannot_run_here_gets_the_nearest_measured_best_and_says_so(mutual_run: Path, tmp_path: Path) -> None:
    summary = export_bundle(mutual_run, ExportOptions(target="rpi4", backend="onnxruntime", out=str(tmp_path / "b"),
                                                      models=("student",), parity_samples=4))
    chosen = load_manifest(Path(summary.bundle))["models"]["student"]["lowering"]
    assert chosen["form"] == "onehot" and chosen["how"].startswith("not measured (rpi4 is aarch64")
    assert "never measured with onnxruntime on aarch64; measured best with onnxruntime 1.32 on x86-64" in chosen["how"]


def test_the_fallback_form_is_per_backend_and_cpu() -> None:
    assert lowering.fallback_form("onnxruntime", "x86_64").form == "onehot"
    tvm = lowering.fallback_form("tvm", "aarch64")
    assert tvm.form == "fused" and "fused 0.16 ms" in tvm.evidence  # TVM's own form, measured best on x86-64
    trt = lowering.fallback_form("tensorrt", "aarch64")
    assert trt.form == "onehot" and trt.evidence.startswith("never measured with tensorrt")
    teacher = create_model(ModelSpec("resnet8", in_channels=1))
    assert lowering.unmeasured_choice(teacher, "why", "onnxruntime", "aarch64").form == "trained"  # nothing to rewrite


def test_an_unknown_lowering_is_one_error_line(mutual_run: Path, tmp_path: Path) -> None:
    assert_one_error(run_cli(["export", str(mutual_run), "--out", "b", "--lowering", "onehto"], cwd=tmp_path),
                     "unknown lowering 'onehto'", "did you mean 'onehot'")
    assert not (tmp_path / "b").exists()


def test_the_one_hot_form_is_bitwise_the_trained_shift() -> None:
    model = _student("shift")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert np.array_equal(lowering.lower(model, "onehot")[0](x).numpy(), model(x).numpy())


def test_eager_pytorch_runs_the_fastest_form_that_matches_the_trained_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.bench.torch_eager import eager_form

    model, x = _student("shift"), torch.randn(1, 3, 32, 32)
    choice = eager_form(model, x, threads=1)
    assert set(choice.median_ms) == {"trained", "onehot", "folded"} and choice.form == min(choice.median_ms, key=choice.median_ms.get)
    assert choice.how == "measured in eager PyTorch on this machine, 1 threads"
    with torch.inference_mode():
        torch.testing.assert_close(choice.model(x), model(x), atol=1e-4, rtol=1e-3)

    def wrong(layer):  # a form that computes something else, however fast
        conv = lowering.LOWERINGS["folded"].rewrite(layer)
        conv.weight.data.mul_(2)
        return conv

    monkeypatch.setitem(lowering.LOWERINGS, "wrong", lowering.Lowering("wrong", "doubled weights", wrong))
    assert "wrong" not in eager_form(model, x, threads=1).median_ms
    teacher = eager_form(create_model(ModelSpec("resnet8", 10, 3)).eval(), x, threads=1)
    assert (teacher.form, teacher.how, teacher.median_ms) == ("trained", "the only form", {})
