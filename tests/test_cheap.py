"""Cheap convolutions: shapes, the shift's exact movement, counts, gradients, ONNX parity."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgedistill.cheap import (
    CheapSpec,
    DepthwiseSeparableConv2d,
    GroupConv2d,
    Shift,
    ShiftConv2d,
    make_student,
    replaced_convs,
    shift_directions,
)
from edgedistill.cheap.modules import shift_channels
from edgedistill.errors import EdgeDistillError, UnknownNameError
from edgedistill.models import count_macs, count_params


def test_shift_directions_follow_the_paper() -> None:
    # c mod 9: dx = c mod 3 - 1, dy = floor(c/3) mod 3 - 1; index 4 is the centre.
    assert shift_directions(3) == [(-1, -1), (0, -1), (1, -1), (-1, 0), (0, 0), (1, 0), (-1, 1), (0, 1), (1, 1)]


def test_shift_moves_each_channel_one_pixel_in_its_direction() -> None:
    x = torch.zeros(1, 11, 5, 5)
    x[:, :, 2, 2] = 1.0  # a dot in the middle of every channel
    y = Shift(11)(x)
    for c, (dx, dy) in enumerate(shift_directions(3)):
        assert y[0, c, 2 + dy, 2 + dx] == 1.0 and y[0, c].sum() == 1.0
    # channels beyond the last full group of 9 are not shifted
    assert torch.equal(y[:, 9:], x[:, 9:])


def test_shift_fills_with_zeros_and_drops_what_leaves_the_image() -> None:
    x = torch.ones(1, 9, 4, 4)
    y = Shift(9)(x)
    dx, dy = shift_directions(3)[0]  # (-1, -1): moves up-left
    assert (dx, dy) == (-1, -1)
    assert y[0, 0, -1, :].sum() == 0 and y[0, 0, :, -1].sum() == 0  # zeros shifted in at bottom/right
    assert y[0, 0, :3, :3].sum() == 9
    assert torch.equal(y[0, 4], x[0, 4])  # centre channel untouched


def test_shift_gradient_is_the_inverse_shift() -> None:
    x = torch.randn(2, 20, 5, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: Shift(20)(t), (x,))
    g = torch.randn_like(x)
    (Shift(20)(x) * g).sum().backward()
    custom = x.grad.clone()
    x.grad = None
    (shift_channels(x, 3) * g).sum().backward()  # plain autograd through the slices
    assert torch.allclose(custom, x.grad)


def test_shift_with_fewer_channels_than_directions_is_identity() -> None:
    x = torch.randn(1, 5, 4, 4)
    assert torch.equal(Shift(5)(x), x)


@pytest.mark.parametrize("stride", [1, 2])
def test_counts_match_hand_computed_values(stride: int) -> None:
    cin, cout, size = 16, 32, 16
    out = size // stride
    x = torch.randn(2, cin, size, size)
    cases = {
        # module: (params, MACs per image)
        DepthwiseSeparableConv2d(cin, cout, 3, stride, 1): (9 * cin + cin * cout, (9 * cin + cin * cout) * out * out),
        GroupConv2d(cin, cout, 3, stride, 1, groups=4): (9 * cin * cin // 4 + cin * cout, (9 * cin * cin // 4 + cin * cout) * out * out),
        ShiftConv2d(cin, cout, 3, stride): (cin * cout, cin * cout * out * out),
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False): (9 * cin * cout, 9 * cin * cout * out * out),
    }
    for module, (params, macs) in cases.items():
        assert module(x).shape == (2, cout, out, out)
        assert count_params(module) == params, module
        assert count_macs(module, (1, cin, size, size)) == macs, module


@pytest.mark.parametrize("module", [
    DepthwiseSeparableConv2d(12, 24, 3, 2, 1),
    GroupConv2d(12, 24, 3, 1, 1, groups=3),
    ShiftConv2d(12, 24, 3, 2),
])
def test_gradients_reach_every_parameter(module: nn.Module) -> None:
    x = torch.randn(2, 12, 8, 8, requires_grad=True)
    module(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["shift", "depthwise", "group"])
def test_cheap_conv_exports_to_plain_onnx_and_matches_onnxruntime(kind: str, tmp_path) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 18, 3, padding=1), nn.ReLU(), nn.Conv2d(18, 20, 3, stride=2, padding=1), nn.BatchNorm2d(20), nn.ReLU()
    )
    student = make_student(model, CheapSpec(kind, **({"groups": 2} if kind == "group" else {}))).eval()
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(student, (x,), path, dynamo=True, external_data=False)
    graph = onnx.load(str(path))
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = student(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


class TinyNet(nn.Module):
    """A model that is not ours: non-square kernels, a 5×5 conv, 1×1 convs, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 3, padding=1))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.first(x)).mean((2, 3)))


@pytest.mark.parametrize("kind", ["shift", "depthwise", "group"])
def test_transform_works_on_any_conv_model(kind: str) -> None:
    teacher = TinyNet()
    student = make_student(teacher, CheapSpec(kind))
    assert replaced_convs(teacher) == ["body.0", "body.3"]
    assert isinstance(student.first, nn.Conv2d)  # the stem is kept
    assert isinstance(student.body[2], nn.Conv2d) and student.body[2].kernel_size == (1, 1)  # 1×1 kept
    assert student.head is not teacher.head and torch.equal(student.head.weight, teacher.head.weight)
    assert not isinstance(student.body[0], nn.Conv2d) and not isinstance(student.body[3], nn.Conv2d)
    assert isinstance(teacher.body[0], nn.Conv2d)  # the teacher itself is untouched
    x = torch.randn(2, 3, 12, 12)
    assert student(x).shape == teacher(x).shape
    assert count_params(student) < count_params(teacher)
    assert count_macs(student, (1, 3, 12, 12)) < count_macs(teacher, (1, 3, 12, 12))


def test_transform_keeps_what_it_is_told_to_keep() -> None:
    student = make_student(TinyNet(), CheapSpec("depthwise"), keep=["first", "body.3"])
    assert isinstance(student.body[3], nn.Conv2d) and isinstance(student.body[0], DepthwiseSeparableConv2d)
    with pytest.raises(EdgeDistillError, match="unknown conv 'nope'"):
        make_student(TinyNet(), CheapSpec("depthwise"), keep=["nope"])


def test_spec_keep_is_kept_besides_the_stem_and_round_trips() -> None:
    spec = CheapSpec("shift", keep=["body.3"])
    assert spec.keep == ("body.3",) and CheapSpec(**spec.to_dict()) == spec
    assert "keep" not in CheapSpec("shift").to_dict()  # specs without kept convs read as before
    student = make_student(TinyNet(), spec)
    assert type(student.first) is nn.Conv2d and type(student.body[3]) is nn.Conv2d  # the stem and body.3
    assert isinstance(student.body[0], ShiftConv2d)
    assert replaced_convs(TinyNet(), spec=spec) == ["body.0"]
    with pytest.raises(EdgeDistillError, match="did you mean 'body.3'") as info:
        make_student(TinyNet(), CheapSpec("shift", keep=["body.33"]))
    assert "--keep body.33" in info.value.message
    with pytest.raises(EdgeDistillError, match="'body' is a Sequential, not a conv"):
        make_student(TinyNet(), CheapSpec("shift", keep=["body"]))


class PaddedNet(nn.Module):
    """A conv that pads by reflection (or circularly, or by replication) between zero-padded ones."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mirror = nn.Conv2d(16, 16, 3, padding=1, padding_mode=mode)
        self.plain = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain(torch.relu(self.mirror(torch.relu(self.stem(x)))))


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize("kind", ["depthwise", "group"])
def test_depthwise_and_group_keep_the_padding_mode(kind: str, mode: str) -> None:
    student = make_student(PaddedNet(mode), CheapSpec(kind)).eval()
    assert student.mirror.spatial.padding_mode == mode
    assert student.plain.spatial.padding_mode == "zeros"
    # the same function as that padding followed by an unpadded spatial conv
    x = torch.randn(1, 16, 6, 6)
    spatial = student.mirror.spatial
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode=mode)
    expected = torch.nn.functional.conv2d(padded, spatial.weight, None, 1, 0, 1, spatial.groups)
    assert torch.allclose(spatial(x), expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_a_padding_mode_exports_to_onnx_and_matches_onnxruntime(mode: str, tmp_path) -> None:
    student = make_student(PaddedNet(mode), CheapSpec("depthwise")).eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / f"{mode}.onnx"
    torch.onnx.export(student, (x,), path, dynamo=True, external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, student(x).numpy(), rtol=1e-4, atol=1e-5)


def test_a_shift_refuses_a_padding_mode_it_cannot_keep() -> None:
    with pytest.raises(EdgeDistillError, match="conv 'mirror' pads with padding_mode='reflect'") as info:
        make_student(PaddedNet("reflect"), CheapSpec("shift"))
    assert "--keep mirror" in info.value.hint and "--kind depthwise" in info.value.hint
    student = make_student(PaddedNet("reflect"), CheapSpec("shift", keep=["mirror"]))  # what the hint says works
    assert type(student.mirror) is nn.Conv2d and student.mirror.padding_mode == "reflect"
    assert isinstance(student.plain, ShiftConv2d)


def test_groups_hint_says_keep_when_no_groups_divides_every_conv() -> None:
    odd = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 37, 3, padding=1), nn.Conv2d(37, 16, 3, padding=1))
    with pytest.raises(EdgeDistillError, match="conv '2' has 37 input channels, not divisible by groups=4") as info:
        make_student(odd, CheapSpec("group", groups=4))
    assert "--keep 2" in info.value.hint and "no --groups" in info.value.hint
    assert "use --groups" not in info.value.hint
    assert make_student(odd, CheapSpec("group", groups=4, keep=["2"]))  # the hint's way out works
    even = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 24, 3, padding=1), nn.Conv2d(24, 16, 3, padding=1))
    with pytest.raises(EdgeDistillError, match="not divisible by groups=16") as info:
        make_student(even, CheapSpec("group", groups=16))
    assert "use --groups 2 or 4 or 8" in info.value.hint and "--keep 2" in info.value.hint


def test_bad_cheap_specs_give_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'shift'"):
        CheapSpec("shfit")
    with pytest.raises(EdgeDistillError, match="no saving"):
        CheapSpec("group", groups=1)
    with pytest.raises(EdgeDistillError, match="not divisible by groups=3"):
        make_student(TinyNet(), CheapSpec("group", groups=3))
    valid_conv = nn.Sequential(nn.Conv2d(3, 9, 3), nn.Conv2d(9, 9, 3))  # no padding: not a 'same' conv
    with pytest.raises(EdgeDistillError, match="cannot become a shift"):
        make_student(valid_conv, CheapSpec("shift"))
    with pytest.raises(EdgeDistillError, match="no standard K×K convolution"):
        make_student(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)), CheapSpec("shift"))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_training_shift_equals_the_exported_formulation(channels_last: bool) -> None:
    """Training uses a faster shift (strided copies, or a one-hot depthwise conv in NHWC on CPU);
    forward and backward must be bit-identical to the Pad/Slice/Concat graph that is exported."""
    x = torch.randn(4, 20, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 20, 7, 9)
    fast_in, plain_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast = Shift(20)(fast_in)
    plain = shift_channels(plain_in, 3)
    assert torch.equal(fast, plain)
    fast.backward(grad)
    plain.backward(grad)
    assert torch.equal(fast_in.grad, plain_in.grad)


def test_specs_of_older_checkpoints_still_read() -> None:
    """Checkpoints written before kinds declared their options carry groups for every kind."""
    assert CheapSpec.from_dict({"kind": "shift", "groups": 4}) == CheapSpec("shift")
    assert CheapSpec.from_dict({"kind": "group", "groups": 8}).option("groups") == 8
    assert CheapSpec("group").to_dict() == {"kind": "group", "groups": 4}  # what checkpoints have always held
    assert CheapSpec("shift").to_dict() == {"kind": "shift"}
    spec = CheapSpec("group", groups=2, keep=["body.3"])
    assert CheapSpec.from_dict(spec.to_dict()) == spec and spec.flags() == "--kind group --groups 2"
