"""The fused shift + 1×1 conv kernel for TVM: found in both ONNX forms of a shift, exact, tunable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgedistill.cheap.modules import ShiftConv2d
from edgedistill.export import lowering
from edgedistill.export.onnx_export import INPUT_NAME, export_onnx

tvm = pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgedistill[tvm]')")

from edgedistill.backends.tvm import fused_shift  # noqa: E402 - needs tvm
from edgedistill.backends.tvm.layout import to_channels_last  # noqa: E402
from edgedistill.backends.tvm.onnx_import import onnx_to_relax  # noqa: E402

SHAPE = (1, 3, 11, 14)  # odd, non-square: stride-2 blocks round up


class TinyShiftNet(nn.Module):
    """Stem, two shift blocks (one with stride 2, BN after each 1×1), a shift whose channels fill
    whole groups (18 = 2·9), a real depthwise → 1×1 (not a shift) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = nn.Sequential(ShiftConv2d(16, 16), nn.BatchNorm2d(16), nn.ReLU())
        self.block2 = nn.Sequential(ShiftConv2d(16, 18, stride=2), nn.BatchNorm2d(18), nn.ReLU())
        self.block3 = nn.Sequential(ShiftConv2d(18, 24, bias=True), nn.ReLU())
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.pointwise = nn.Conv2d(24, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        return self.fc(x.mean((2, 3)))


SHIFTS = 3  # shift → 1×1 chains in TinyShiftNet


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    model = TinyShiftNet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


@pytest.fixture(scope="module")
def exports(net: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fused")
    paths = {}
    for form in ("trained", "onehot"):
        model, _ = lowering.lower(net, form)
        paths[form] = export_onnx(model, SHAPE, out / f"{form}.onnx").path
    return paths


def _relax(path: Path, shape: tuple[int, ...] = SHAPE):  # noqa: ANN202 - a tvm.IRModule
    """The CPU graph compile_onnx fuses: imported, then channels-last."""
    return to_channels_last(onnx_to_relax(onnx.load(str(path)), INPUT_NAME, shape))


def _run(mod, x: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a tvm.IRModule
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def _prim_names(mod) -> list[str]:  # noqa: ANN001
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def test_each_shift_becomes_one_kernel_with_the_same_outputs(net: nn.Module, exports: dict[str, Path]) -> None:
    mod = _relax(exports["onehot"])
    fused, count = fused_shift.fuse_shift_conv(mod)
    assert count == SHIFTS  # the real depthwise → 1×1 is not one of them
    names = _prim_names(fused)
    assert sum(name.startswith(fused_shift.PRIMFUNC_NAME) for name in names) == SHIFTS
    convs = [b.value for b in fused["main"].body.blocks[0].bindings if getattr(b.value.op, "name", "") == "relax.nn.conv2d"]
    assert sorted(int(c.attrs.groups) for c in convs) == [1, 1, 24]  # stem, the real depthwise and its 1×1
    assert {str(c.attrs.data_layout) for c in convs} == {"NHWC"}

    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    reference = ort.InferenceSession(str(exports["onehot"])).run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        eager = net(torch.from_numpy(x)).numpy()
    got = _run(fused, x)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)


def test_the_trained_forms_shift_is_left_to_the_plain_kernels(exports: dict[str, Path]) -> None:
    """Pad + K² Slices + Concat is not matched (the fused form compiles the one-hot graph); it still computes the network."""
    mod = _relax(exports["trained"])
    fused, count = fused_shift.fuse_shift_conv(mod)
    assert count == 0 and fused.same_as(mod)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    reference = ort.InferenceSession(str(exports["trained"])).run(None, {INPUT_NAME: x})[0]
    np.testing.assert_allclose(_run(mod, x), reference, rtol=1e-5, atol=1e-5)


def test_only_exact_one_hot_depthwise_weights_count_as_a_shift() -> None:
    weight = np.zeros((4, 1, 3, 3), np.float32)
    weight[np.arange(4), 0, [0, 1, 2, 1], [1, 0, 2, 1]] = 1.0
    np.testing.assert_array_equal(fused_shift.one_hot_offsets(weight, (1, 1)), [[-1, 0], [0, -1], [1, 1], [0, 0]])
    for change in (lambda w: w.__setitem__((0, 0, 0, 0), 1e-7),  # a second tap
                   lambda w: w.__setitem__((1, 0, 1, 0), 0.5),  # a scaled tap
                   lambda w: w.__setitem__((2, 0, 2, 2), 0.0)):  # no tap at all
        bad = weight.copy()
        change(bad)
        assert fused_shift.one_hot_offsets(bad, (1, 1)) is None


def test_a_one_hot_conv_in_another_channel_order_reads_a_table(tmp_path: Path) -> None:
    """Not the interleaved layout (random taps per channel): still fused, offsets from a table."""
    conv = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
    pointwise = nn.Conv2d(12, 8, 1, stride=2)
    taps = np.random.default_rng(2).integers(0, 9, 12)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight.view(12, 9)[torch.arange(12), torch.from_numpy(taps)] = 1.0
    shape = (1, 12, 9, 10)
    path = export_onnx(nn.Sequential(conv, pointwise).eval(), shape, tmp_path / "table.onnx").path
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    reference = ort.InferenceSession(str(path)).run(None, {INPUT_NAME: x})[0]
    fused, count = fused_shift.fuse_shift_conv(_relax(path, shape))
    assert count == 1
    np.testing.assert_allclose(_run(fused, x), reference, rtol=1e-5, atol=1e-5)


def test_interleaved_layout_is_recognised() -> None:
    from edgedistill.cheap.modules import shift_directions

    for channels in (9, 16, 18):
        moves = shift_directions(3)
        offsets = np.array([(-moves[c % 9][1], -moves[c % 9][0]) if c < channels // 9 * 9 else (0, 0) for c in range(channels)])
        assert fused_shift.interleaved_layout(offsets) == (3, channels // 9 * 9, -1)
    assert fused_shift.interleaved_layout(np.array([(1, 0)] * 9)) is None


def test_metaschedule_sees_the_fused_kernel_as_a_tuned_task(exports: dict[str, Path]) -> None:
    from tvm import relax, transform
    from tvm.s_tir import meta_schedule as ms

    from edgedistill.backends.tvm.tuning import TUNED_OPS

    fused, _ = fused_shift.fuse_shift_conv(_relax(exports["onehot"]))
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 1})
    with target:
        prepared = transform.Sequential([relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
                                         relax.pipeline.zero_pipeline()])(fused)
    names = [task.task_name for task in ms.relax_integration.extract_tasks(prepared, target)]
    shift_tasks = [name for name in names if fused_shift.PRIMFUNC_NAME in name]
    assert len(shift_tasks) == SHIFTS, names
    assert all(any(op in name for op in TUNED_OPS) for name in shift_tasks)


def _shift_tasks(path: Path) -> list:
    """MetaSchedule's tuning tasks of the fused kernels of the ONNX model at ``path``."""
    from tvm.s_tir import meta_schedule as ms

    from edgedistill.backends.tvm.tuning import fuse_kernels

    shape = SHAPE if path.stem != "table" else (1, 12, 9, 10)
    fused, _ = fused_shift.fuse_shift_conv(_relax(path, shape))
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})
    tasks = ms.relax_integration.extract_tasks(fuse_kernels(fused, target), target)
    return [task for task in tasks if fused_shift.PRIMFUNC_NAME in task.task_name]


def test_every_tiling_of_the_shift_template_computes_the_same_kernel(exports: dict[str, Path]) -> None:
    """Each fused task (stride 1 and 2, odd sizes, tail channels, bias and ReLU behind it) scheduled by
    the template with several sampled tilings: each build gives what the unscheduled kernel gives."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from edgedistill.backends.tvm.conv_schedule import schedule_sampled

    tasks = _shift_tasks(exports["onehot"])
    assert len(tasks) == SHIFTS
    for task in tasks:
        func = task.dispatched[0]
        rng = np.random.default_rng(5)
        args = [rng.standard_normal([int(d) for d in info.shape]).astype(str(info.dtype)) for info in ms.arg_info.ArgInfo.from_entry_func(func)]

        def run(mod) -> np.ndarray:  # noqa: ANN001
            tensors = [tvm.runtime.tensor(a) for a in args]
            tvm.compile(mod, target="llvm")(*tensors)
            return tensors[-1].numpy()

        expected = run(func)
        tilings = set()
        for seed in range(1, 5):
            sch = s_tir.Schedule(func, seed=seed)
            schedule_sampled(sch, lanes=1)  # lanes=1: even these small kernels run in parallel
            tilings.add(tuple(tuple(int(v) for v in d) for d in sch.trace.decisions.values()))
            np.testing.assert_allclose(run(sch.mod), expected, rtol=1e-5, atol=1e-5, err_msg=task.task_name)
        assert len(tilings) > 1, task.task_name  # a sampled space, not one schedule


def test_compile_onnx_records_the_fusion_and_can_turn_it_off(exports: dict[str, Path], tmp_path: Path) -> None:
    from edgedistill.backends.tvm.compile import compile_onnx, run_local
    from edgedistill.backends.tvm.tuning import fuse_kernels
    from edgedistill.export.targets import load_target

    x = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    reference = ort.InferenceSession(str(exports["onehot"])).run(None, {INPUT_NAME: x})[0]
    for fuse, expect in ((True, {"shift_conv": SHIFTS}), (False, None), (None, None)):  # None: the default (off)
        options = {} if fuse is None else {"fuse_shift": fuse}
        artifact = compile_onnx(exports["onehot"], load_target("host"), tmp_path / f"m{fuse}.so", input_name=INPUT_NAME,
                                input_shape=SHAPE, **options)
        assert artifact.fused == expect
        assert artifact.manifest(tmp_path).get("fused") == expect
        # Untuned, every conv kernel gets the default direct-conv schedule: the stem, the real depthwise
        # and its 1×1, and each shift (one fused kernel, or its one-hot depthwise and its 1×1; kernels of
        # the same shapes are one kernel); the classifier and the mean get theirs.
        kernels = _prim_names(fuse_kernels(fused_shift.fuse_shift_conv(_relax(exports["onehot"]))[0] if fuse else _relax(exports["onehot"]),
                                           tvm.target.Target(artifact.target)))
        assert artifact.default_scheduled["conv"] == sum("conv2d" in name for name in kernels) >= 3 + SHIFTS
        assert sum(artifact.default_scheduled.values()) == len(kernels)
        assert artifact.manifest(tmp_path)["default_scheduled"] == artifact.default_scheduled
        np.testing.assert_allclose(run_local(artifact.path, x), reference, rtol=1e-5, atol=1e-5)


def test_conv_kernels_are_tuned_in_the_template_and_retuned_when_their_records_come_from_another_space(
        exports: dict[str, Path], tmp_path: Path) -> None:
    from edgedistill.backends.tvm import conv_schedule, tuning
    from edgedistill.backends.tvm.compile import compile_onnx, run_local
    from edgedistill.export.targets import load_target

    x = np.random.default_rng(6).standard_normal(SHAPE).astype(np.float32)
    reference = ort.InferenceSession(str(exports["onehot"])).run(None, {INPUT_NAME: x})[0]

    def compile_tuned(name: str):  # noqa: ANN202 - a TvmArtifact
        artifact = compile_onnx(exports["onehot"], load_target("host"), tmp_path / f"{name}.so", input_name=INPUT_NAME,
                                input_shape=SHAPE, fuse_shift=True, tune_trials=8, tuning_dir=tmp_path / "db")
        np.testing.assert_allclose(run_local(artifact.path, x), reference, rtol=1e-5, atol=1e-5)
        return artifact

    def spaces() -> dict[str, str | None]:
        return {w["task"]: w.get("space") for w in tuning.read_meta(first.tuning_database)["workloads"].values()}

    first = compile_tuned("first")
    convs = [task for task in spaces() if "conv2d" in task]
    searched, seeded = _seeded(first.tuning_database)
    assert searched and seeded == searched  # each conv workload holds its default tiles, measured before the search
    assert sum(fused_shift.PRIMFUNC_NAME in task for task in convs) == SHIFTS and len(convs) > SHIFTS  # the stem, the real convs
    assert all(spaces()[task] == conv_schedule.SPACE for task in convs)
    assert all(space is None for task, space in spaces().items() if task not in convs)  # the matmul: MetaSchedule's rules
    assert compile_tuned("again").tuning_reused

    # A database whose conv records were searched in another space (an older template, or
    # MetaSchedule's own rules): those tasks, and only those, are searched again.
    meta = tuning.read_meta(first.tuning_database)
    for workload in meta["workloads"].values():
        workload.pop("space", None)
    (first.tuning_database / tuning.META_FILE).write_text(json.dumps(meta))
    retuned = compile_tuned("retuned")
    assert not retuned.tuning_reused and retuned.tuning_details["measured_now"] > 0
    assert tuning.read_meta(first.tuning_database)["runs"][-1]["tasks"] == len(convs)
    assert all(spaces()[task] == conv_schedule.SPACE for task in convs)


def _seeded(db_dir: Path) -> tuple[set[str], set[str]]:
    """The conv workloads of the database, and those holding a record of the template's default tiles."""
    from tvm.s_tir import meta_schedule as ms

    from edgedistill.backends.tvm import conv_schedule, tuning

    database = ms.database.JSONDatabase(work_dir=str(db_dir / tuning.read_meta(db_dir)["generation"]))
    searched, seeded = set(), set()
    for record in database.get_all_tuning_records():
        default = conv_schedule.default_schedule(record.workload.mod, conv_schedule.vector_lanes(record.target))
        if default is None:
            continue
        key = str(record.workload.mod)
        searched.add(key)
        if [[int(v) for v in d] for d in record.trace.decisions.values()] == [[int(v) for v in d] for d in default.trace.decisions.values()]:
            seeded.add(key)
    return searched, seeded


def test_the_fused_form_ships_a_fused_library_checked_like_every_artifact(mutual_run: Path, tmp_path: Path) -> None:
    from cli_helpers import assert_one_error, run_cli

    bundle = tmp_path / "fused"
    result = run_cli(["export", str(mutual_run), "--backend", "tvm", "--model", "student", "--lowering", "fused",
                      "--tune-trials", "0", "--eval-limit", "0", "--parity-samples", "4", "--out", str(bundle)])
    assert result.exit_code == 0, result.stderr
    student = json.loads((bundle / "manifest.json").read_text())["models"]["student"]
    library = student["artifacts"]["tvm"]
    assert library["fused"]["shift_conv"] > 0 and library["lowering"]["form"] == "fused"
    assert library["executed_macs"] == student["macs"] < student["executed_macs"]  # no one-hot MACs in the fused kernel
    # The bundle's graph (onnxruntime's) is the one the fused kernels are compiled from.
    assert student["lowering"]["form"] == "onehot" and student["lowering"]["how"] == "requested: the graph of the fused form"
    assert [p["passed"] for p in student["parity"]] == [True, True]  # onnxruntime, then the fused TVM library
    assert_one_error(run_cli(["export", str(mutual_run), "--lowering", "fused", "--out", str(tmp_path / "ort")]),
                     "--lowering fused is compiled by the tvm backend only, not onnxruntime")
    assert not (tmp_path / "ort").exists()
