"""Untuned TVM CPU code: dense conv weights stored HWIO, the direct-conv template's two register
tiles, and every kernel given its default schedule (conv template, matmul, parallel loops)
computing exactly what the unscheduled kernel does."""

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
from edgedistill.backends.tvm.fused_shift import PRIMFUNC_NAME, fuse_shift_conv  # noqa: E402
from edgedistill.backends.tvm.onnx_import import onnx_to_relax  # noqa: E402
from edgedistill.backends.tvm.tuning import fuse_kernels  # noqa: E402
from edgedistill.backends.tvm.untuned import SCHEDULES, schedule_untuned  # noqa: E402
from edgedistill.backends.tvm.weight_layout import HWIO, conv_weights_hwio  # noqa: E402

SHAPE = (1, 3, 20, 22)  # non-square; odd sizes after the stride-2 stem and pooling


class TinyImageNet(nn.Module):
    """An ImageNet-shaped network in miniature: a stride-2 7×7 stem, 3×3/2 max pooling, a shift block,
    a depthwise → 1×1 block, global mean and a classifier wider than a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.shift = nn.Sequential(ShiftConv2d(32, 32), nn.BatchNorm2d(32), nn.ReLU())
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.pointwise = nn.Conv2d(32, 48, 1)
        self.fc = nn.Linear(48, 37)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shift(self.stem(x))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        return self.fc(x.mean((2, 3)))


DENSE_CONVS = 2  # the stem and the pointwise conv; the shift's 1×1 becomes part of the fused kernel


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model, _ = lowering.lower(TinyImageNet().eval(), "onehot")
    return export_onnx(model, SHAPE, tmp_path_factory.mktemp("schedules") / "tiny.onnx").path


def _target():  # noqa: ANN202 - a tvm.target.Target
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _prepared(path: Path):  # noqa: ANN202 - a tvm.IRModule
    """What compile_onnx schedules: fused shift kernels, HWIO weights, legalized and fused to TIR."""
    mod, _ = fuse_shift_conv(onnx_to_relax(onnx.load(str(path)), INPUT_NAME, SHAPE))
    mod, _ = conv_weights_hwio(mod)
    return fuse_kernels(mod, _target())


def _kernels(mod) -> dict[str, object]:  # noqa: ANN001
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_dense_conv_weights_become_hwio_and_grouped_ones_stay_oihw(onnx_path: Path) -> None:
    mod, _ = fuse_shift_conv(onnx_to_relax(onnx.load(str(onnx_path)), INPUT_NAME, SHAPE))
    rewritten, count = conv_weights_hwio(mod)
    assert count == DENSE_CONVS
    layouts = {}
    for binding in rewritten["main"].body.blocks[0].bindings:
        if getattr(binding.value.op, "name", "") == "relax.nn.conv2d":
            attrs = binding.value.attrs
            layouts[int(attrs.groups)] = layouts.get(int(attrs.groups), set()) | {str(attrs.kernel_layout)}
    assert layouts == {1: {HWIO}, 32: {"OIHW"}}  # the depthwise conv keeps its layout


def test_each_conv_kernel_gets_the_register_tile_of_its_weight_layout(onnx_path: Path) -> None:
    from tvm import s_tir

    modes = {}  # conv block name -> register tiles of the kernels holding one
    for func in _kernels(_prepared(onnx_path)).values():
        sch = s_tir.Schedule(func)
        block = conv_schedule.conv_block(sch)
        if block is not None:
            modes.setdefault(sch.get(block).name_hint, []).append(conv_schedule.register_tile(sch, block))
    assert modes == {
        "conv2d_nchw": [conv_schedule.CHANNELS] * DENSE_CONVS,  # HWIO weights: a vector of output channels
        PRIMFUNC_NAME: [conv_schedule.CHANNELS],  # the fused kernel reads its 1×1 weights (C, O)
        "group_conv2d_nchw": [conv_schedule.WIDTH],  # one input plane per output channel: along the row
    }


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
    """Stem (stride 2, 7×7, odd output), fused shift, depthwise and pointwise convs, in parallel or
    not: the default tiles and several sampled ones give exactly what TVM's unscheduled kernel gives."""
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
    assert checked >= DENSE_CONVS + 2


def test_a_kernel_runs_in_parallel_only_with_the_work_for_two_threads(onnx_path: Path) -> None:
    """The bar is in vector multiply-adds: with 16 lanes the tiny stem runs on one thread, with 1 lane
    (a bar 16 times lower) in parallel; the default and the sampled tiles agree."""
    from tvm import s_tir

    stem = next(mod for name, (mod, _, _) in _kernel_modules(onnx_path).items() if "conv2d_add_relu" in name and "shift" not in name)
    sch = s_tir.Schedule(stem)
    macs = int(np.prod([int(sch.get(loop).extent) for loop in sch.get_loops(conv_schedule.conv_block(sch))]))
    assert macs == 32 * 10 * 11 * 3 * 7 * 7  # 32 channels of a 10×11 output (stride 2), 3 input channels, 7×7
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
    assert artifact.default_scheduled["conv"] >= DENSE_CONVS + 2 and artifact.default_scheduled["matmul"] == 1
    np.testing.assert_allclose(run_local(artifact.path, x), reference, rtol=1e-5, atol=1e-5)
