"""TVM's CPU code: channels-last, the direct-conv template's tiles, and every kernel given its
default schedule (conv template, matmul, parallel loops) computing exactly what the unscheduled
kernel does."""

from __future__ import annotations

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

from edgedistill.backends.tvm import conv_schedule  # noqa: E402 - needs tvm
from edgedistill.backends.tvm.fused_shift import PRIMFUNC_NAME, _Graph, fuse_shift_conv  # noqa: E402
from edgedistill.backends.tvm.onnx_import import onnx_to_relax  # noqa: E402
from edgedistill.backends.tvm.tuning import fuse_kernels  # noqa: E402
from edgedistill.backends.tvm.untuned import SCHEDULES, schedule_untuned  # noqa: E402
from edgedistill.backends.tvm.layout import to_channels_last  # noqa: E402

SHAPE = (1, 3, 20, 22)  # non-square; odd sizes after the stride-2 stem and pooling


class TinyImageNet(nn.Module):
    """An ImageNet-shaped network in miniature: a stride-2 7×7 stem, 3×3/2 max pooling, a shift block,
    a depthwise → 1×1 block, a grouped conv, global mean and a classifier wider than a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.shift = nn.Sequential(ShiftConv2d(32, 32), nn.BatchNorm2d(32), nn.ReLU())
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.pointwise = nn.Conv2d(32, 48, 1)
        self.grouped = nn.Conv2d(48, 48, 3, padding=1, groups=4)  # 12 channels a group
        self.fc = nn.Linear(48, 37)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shift(self.stem(x))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        return self.fc(torch.relu(self.grouped(x)).mean((2, 3)))


DENSE_CONVS = 2  # the stem and the pointwise conv; the shift's 1×1 becomes part of the fused kernel


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model, _ = lowering.lower(TinyImageNet().eval(), "onehot")
    return export_onnx(model, SHAPE, tmp_path_factory.mktemp("schedules") / "tiny.onnx").path


def _target():  # noqa: ANN202 - a tvm.target.Target
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _prepared(path: Path):  # noqa: ANN202 - a tvm.IRModule
    """What compile_onnx schedules: channels-last, fused shift kernels, legalized and fused to TIR."""
    mod, _ = fuse_shift_conv(to_channels_last(onnx_to_relax(onnx.load(str(path)), INPUT_NAME, SHAPE)))
    return fuse_kernels(mod, _target())


def _kernels(mod) -> dict[str, object]:  # noqa: ANN001
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_the_cpu_graph_is_channels_last_from_its_input_on(onnx_path: Path) -> None:
    """Every conv NHWC with HWIO weights; the only activation transposed is the NCHW input: none
    around the convs, the pooling or the mean."""
    mod = to_channels_last(onnx_to_relax(onnx.load(str(onnx_path)), INPUT_NAME, SHAPE))
    bindings = mod["main"].body.blocks[0].bindings
    convs = [b.value for b in bindings if getattr(b.value.op, "name", "") == "relax.nn.conv2d"]
    assert len(convs) == 6  # stem, one-hot depthwise and 1×1 of the shift, depthwise, pointwise, grouped
    assert {(str(c.attrs.data_layout), str(c.attrs.kernel_layout), str(c.attrs.out_layout)) for c in convs} == {("NHWC", "HWIO", "NHWC")}
    graph = _Graph(mod["main"])  # (weights and biases are transposed too: constants, folded later)
    moved = [b.value for b in bindings if getattr(b.value.op, "name", "") == "relax.permute_dims" and graph.constant(b.value) is None]
    assert len(moved) == 1 and moved[0].args[0].same_as(mod["main"].params[0])  # the input; the mean keeps channels last


def test_a_grouped_convs_channel_vector_stays_inside_one_group(onnx_path: Path) -> None:
    from tvm import s_tir

    limits = {}
    for func in _kernels(_prepared(onnx_path)).values():
        sch = s_tir.Schedule(func)
        block = conv_schedule.conv_block(sch)
        if block is not None:
            limits.setdefault(sch.get(block).name_hint, set()).add(conv_schedule.inner_limits(sch, block)["o"])
    assert limits == {"conv2d_nhwc": {conv_schedule.MAX_INNER["o"]}, PRIMFUNC_NAME: {conv_schedule.MAX_INNER["o"]},
                      "group_conv2d_nhwc": {conv_schedule.MAX_INNER["o"], 12}}  # depthwise: any vector; 4 groups of 12
    assert conv_schedule.default_tiles({"y": 10, "x": 11, "o": 48}, 16, 12)["o"] == 12
    assert conv_schedule.default_tiles({"y": 56, "x": 56, "o": 64}, 16, 64) == {"y": 1, "x": 8, "o": 32}
    assert conv_schedule.default_tiles({"y": 7, "x": 7, "o": 512}, 4, 64) == {"y": 1, "x": 7, "o": 8}


def _run_kernel(mod, args: list[np.ndarray]) -> np.ndarray:  # noqa: ANN001 - an IRModule of one kernel
    tensors = [tvm.runtime.tensor(a) for a in args]
    tvm.compile(mod, target=_target())(*tensors)
    return tensors[-1].numpy()


def _kernel_modules(path: Path) -> dict[str, object]:
    """Each kernel as a module of its own, with random arguments, and what TVM's unscheduled kernel computes."""
    from tvm.s_tir import meta_schedule as ms

    out = {}
    for name, kernel in _kernels(_prepared(path)).items():
        mod = tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")})
        rng = np.random.default_rng(3)
        args = [rng.standard_normal([int(d) for d in info.shape]).astype(str(info.dtype)) for info in ms.arg_info.ArgInfo.from_entry_func(mod)]
        out[name] = (mod, args, _run_kernel(mod, args))
    return out


@pytest.mark.parametrize("lanes", [1, 16])  # TinyImageNet's kernels are big enough for two threads with 1 lane, not with 16
def test_every_template_kernel_at_its_defaults_and_sampled_tiles_computes_the_unscheduled_kernel(onnx_path: Path, lanes: int) -> None:
    """Stem (stride 2, 7×7, odd output), fused shift, depthwise, pointwise and grouped convs, in
    parallel or not: the default tiles and several sampled ones give exactly what TVM's unscheduled
    kernel gives."""
    from tvm import s_tir

    checked = 0
    for name, (mod, args, expected) in _kernel_modules(onnx_path).items():
        default = conv_schedule.default_schedule(mod, lanes)
        if default is None:
            continue
        np.testing.assert_allclose(_run_kernel(default.mod, args), expected, rtol=1e-5, atol=1e-5, err_msg=name)
        for seed in range(1, 4):
            sch = s_tir.Schedule(mod, seed=seed)
            conv_schedule.schedule_sampled(sch, lanes)
            np.testing.assert_allclose(_run_kernel(sch.mod, args), expected, rtol=1e-5, atol=1e-5, err_msg=f"{name} seed {seed}")
        checked += 1
    assert checked == DENSE_CONVS + 3  # and the fused shift, the depthwise, the grouped conv


def test_a_kernel_runs_in_parallel_only_with_the_work_for_two_threads(onnx_path: Path) -> None:
    """The bar is in vector multiply-adds: with 16 lanes the tiny stem runs on one thread, with 1 lane
    (a bar 16 times lower) in parallel; the default and the sampled tiles agree."""
    from tvm import s_tir

    def loop_extents(mod) -> list[int]:  # noqa: ANN001
        sch = s_tir.Schedule(mod)
        block = conv_schedule.conv_block(sch)
        return [int(sch.get(loop).extent) for loop in sch.get_loops(block)] if block is not None else []

    (stem,) = [mod for mod, _, _ in _kernel_modules(onnx_path).values() if loop_extents(mod)[-3:] == [7, 7, 3]]
    macs = int(np.prod(loop_extents(stem)))
    assert macs == 10 * 11 * 32 * 7 * 7 * 3  # a 10×11 output (stride 2) of 32 channels, 7×7 over 3 input channels
    for lanes in (1, 16):
        parallel = conv_schedule.worth_parallel(macs, lanes)
        assert parallel == (lanes == 1)
        sampled = s_tir.Schedule(stem, seed=1)
        conv_schedule.schedule_sampled(sampled, lanes)
        for scheduled in (conv_schedule.default_schedule(stem, lanes).mod, sampled.mod):
            assert ("T.parallel" in scheduled.script()) == parallel


def test_every_kernel_gets_a_default_schedule_that_computes_the_unscheduled_kernel(onnx_path: Path) -> None:
    """The classifier (37 outputs: vectors of 1), the max pooling (its -inf border inlined), the mean and the
    convs each get the first default schedule that fits them, with the same results."""
    kernels = _kernel_modules(onnx_path)
    scheduled, counts = schedule_untuned(_prepared(onnx_path), _target())
    assert sum(counts.values()) == len(kernels)  # nothing left as naive loops
    chosen = {}
    for name, (mod, args, expected) in kernels.items():
        func = scheduled[name]
        assert func.attrs["tirx.is_scheduled"], name
        chosen[name] = next(kind for kind, schedule in SCHEDULES.items() if schedule(mod, 16) is not None)
        got = _run_kernel(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), args)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    assert chosen["max_pool2d"] == chosen["mean"] == "loops"
    assert [kind for name, kind in chosen.items() if "matmul" in name] == ["matmul"]
    assert counts == {kind: list(chosen.values()).count(kind) for kind in set(chosen.values())}


def test_a_matmul_whose_weights_run_along_the_reduction_keeps_plain_loops() -> None:
    """y = x · Wᵀ with W stored (out, in): a vector along the output would gather, so no matmul schedule."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((1, 64), "float32"), w: T.Buffer((24, 64), "float32"), y: T.Buffer((1, 24), "float32")) -> None:
        for i, j, k in T.grid(1, 24, 64):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    y[vi, vj] = T.float32(0)
                y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vj, vk]

    assert SCHEDULES["matmul"](main, 16) is None
    assert SCHEDULES["loops"](main, 16) is not None


def test_the_untuned_library_computes_the_network(onnx_path: Path, tmp_path: Path) -> None:
    from edgedistill.backends.tvm.compile import compile_onnx, run_local
    from edgedistill.export.targets import load_target

    x = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)
    reference = ort.InferenceSession(str(onnx_path)).run(None, {INPUT_NAME: x})[0]
    artifact = compile_onnx(onnx_path, load_target("host"), tmp_path / "tiny.so", input_name=INPUT_NAME, input_shape=SHAPE,
                            fuse_shift=True)
    assert artifact.default_scheduled["conv"] == DENSE_CONVS + 3 and artifact.default_scheduled["matmul"] == 1
    np.testing.assert_allclose(run_local(artifact.path, x), reference, rtol=1e-5, atol=1e-5)
