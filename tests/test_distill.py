"""Losses against hand-computed values, and where each method's gradients flow."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgedistill.cheap import CheapSpec
from edgedistill.distill.losses import distill_kl
from edgedistill.distill.methods import (
    METHODS,
    Alone,
    ClassicKD,
    DeepMutualLearning,
    MethodOptions,
    MutualTeacherStudent,
    OnlineDistillation,
)
from edgedistill.models import ModelSpec, create_model

STUDENT = ModelSpec("resnet8", num_classes=5, in_channels=1, options={"width": 8}, cheap=CheapSpec("shift"))


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_distill_kl_matches_a_hand_computation() -> None:
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    t = 2.0
    per_sample = []
    for s_row, t_row in zip(student, teacher):
        p_s, p_t = _softmax(s_row, t), _softmax(t_row, t)
        per_sample.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    expected = t * t * sum(per_sample) / len(per_sample)  # batchmean, not divided by the 3 classes
    got = distill_kl(torch.tensor(student), torch.tensor(teacher), t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert distill_kl(torch.tensor(student), torch.tensor(student), t).item() == pytest.approx(0.0, abs=1e-7)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0])


def test_od_loss_is_the_papers_formula() -> None:
    method = OnlineDistillation(STUDENT, MethodOptions(temperature=3.0, kl_weight=0.5, students=3))
    x, y = _batch()
    logits = method(x)
    assert set(logits) == {"online-teacher", "student1", "student2", "student3"}
    total, parts = method.loss(logits, y)
    t = logits["online-teacher"]
    expected = F.cross_entropy(t, y)
    for name in ("student1", "student2", "student3"):
        expected = expected + F.cross_entropy(logits[name], y) + 0.5 * distill_kl(logits[name], t, 3.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(parts) == 1 + 2 * 3


def test_od_students_are_independent_and_the_teacher_is_only_a_head() -> None:
    method = OnlineDistillation(STUDENT, MethodOptions(students=4))
    w = [method.network(f"student{i}").stem[0].weight for i in (1, 2, 3, 4)]
    assert not torch.equal(w[0], w[1])
    student_params = sum(p.numel() for p in method.network("student1").parameters())
    head_params = sum(p.numel() for p in method.ensemble.head.parameters())
    assert sum(p.numel() for p in method.parameters()) == 4 * student_params + head_params
    features = 4 * method.network("student1").num_features
    assert head_params == 2 * features + features * 5 + 5  # BN(4C) + Linear(4C → 5)


def test_gradients_reach_every_student_from_the_teachers_loss() -> None:
    method = OnlineDistillation(STUDENT, MethodOptions(students=3))
    x, y = _batch()
    F.cross_entropy(method(x)["online-teacher"], y).backward()
    for name in method.student_names:
        grads = [p.grad for p in method.network(name).layers.parameters()]  # not fc: the head reads features
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_od_kl_trains_the_teacher_too_nothing_detached() -> None:
    method = OnlineDistillation(STUDENT, MethodOptions(students=2))
    x, y = _batch()
    logits = method(x)
    distill_kl(logits["student1"], logits["online-teacher"], 4.0).backward()
    assert method.ensemble.head.fc.weight.grad.abs().sum() > 0  # the teacher moves towards the student
    assert method.network("student2").layers[0].conv1.pointwise.weight.grad.abs().sum() > 0  # via the teacher


def test_mutual_teacher_and_student_each_learn_from_the_other() -> None:
    method = MutualTeacherStudent(STUDENT, MethodOptions())
    x, y = _batch()
    logits = method(x)
    assert not method.specs["teacher"].is_student and method.specs["student"].is_student
    total, parts = method.loss(logits, y)
    assert set(parts) == {"ce/teacher", "ce/student", "kl/student", "kl/teacher"}
    parts["kl/student"].backward(retain_graph=True)  # the student moves towards the teacher, not the reverse
    assert method.student.fc.weight.grad.abs().sum() > 0
    assert method.teacher_net.fc.weight.grad is None
    parts["kl/teacher"].backward()  # and the teacher towards the student
    assert method.teacher_net.fc.weight.grad.abs().sum() > 0


def test_dml_treats_the_peer_as_a_fixed_target() -> None:
    method = DeepMutualLearning(STUDENT, MethodOptions())
    x, y = _batch()
    _, parts = method.loss(method(x), y)
    parts["kl/student1"].backward()
    assert method.student1.fc.weight.grad.abs().sum() > 0
    assert method.student2.fc.weight.grad is None


def test_kd_teacher_is_frozen_and_stays_in_eval_mode() -> None:
    teacher_spec = STUDENT.as_teacher()
    method = ClassicKD(STUDENT, MethodOptions(), create_model(teacher_spec), teacher_spec)
    method.train()
    assert not method.teacher_net.training and method.student.training
    x, y = _batch()
    total, parts = method.loss(method(x), y)
    total.backward()
    assert all(p.grad is None for p in method.teacher_net.parameters())
    assert set(parts) == {"ce/student", "kl/student"}


def test_alone_trains_either_network() -> None:
    x, y = _batch()
    student = Alone(STUDENT, MethodOptions(alone_network="student"))
    teacher = Alone(STUDENT, MethodOptions(alone_network="teacher"))
    assert student.student_names == ("student",) and student.teacher_name is None
    assert teacher.teacher_name == "teacher" and not teacher.specs["teacher"].is_student
    total, _ = teacher.loss(teacher(x), y)
    assert total.item() == pytest.approx(F.cross_entropy(teacher(x)["teacher"], y).item(), rel=1e-6)


def _record(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "loss": loss, "val_top1": {"student": 0.5}, "train_top1": {}, "images_per_s": 100.0}


def test_progress_in_a_log_starts_at_once_and_repeats_while_an_epoch_runs() -> None:
    from edgedistill.distill.progress import RichEpochReporter
    from edgedistill.ui import err_console

    with err_console.capture() as captured:  # pytest's stderr is not a terminal: the log lines
        with RichEpochReporter(2, log_every_s=0.0) as reporter:
            reporter.start_run("training od: runs/[/x]")
            reporter.start_epoch(0, 3)
            reporter.step(None, 64)
            reporter.step(1.5, 64)
            reporter.step(1.25, 64)  # the last step: the epoch line follows instead
            reporter.end_epoch(_record(0, 1.25))
    lines = captured.get().splitlines()
    assert lines[0] == "training od: runs/[/x]"  # markup-free
    assert lines[1].startswith("epoch 1/2: step 1/3, ") and "img/s" in lines[1] and "loss" not in lines[1]
    assert lines[2].startswith("epoch 1/2: step 2/3, loss 1.500, ")
    assert lines[3].startswith("epoch 1/2: loss 1.250 | val student 50.00%")
    assert len(lines) == 4


def test_the_bar_does_not_show_the_previous_epochs_loss() -> None:
    from edgedistill.distill.progress import RichEpochReporter

    reporter = RichEpochReporter(2, log_every_s=1e9)
    with reporter:
        reporter.start_epoch(0, 2)
        reporter.step(2.0, 8)
        reporter.end_epoch(_record(0, 2.0))
        reporter.start_epoch(1, 2)
        reporter.step(None, 8)  # no loss of epoch 2 yet
        task = reporter.progress.tasks[-1]
        assert "2.000" not in task.fields["info"] and reporter.loss == ""


def test_torchrun_with_one_process_still_trains_through_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun --nproc_per_node 1 must exercise the DDP path (NCCL on a GPU), not skip it."""
    import socket

    import torch.distributed as dist

    from edgedistill.distill.runtime import training_runtime

    with socket.socket() as sock:  # a free port on this machine for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"TORCHELASTIC_RUN_ID": "test", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    with training_runtime("cpu", amp=False) as runtime:
        assert runtime.distributed and dist.is_initialized() and dist.get_world_size() == 1
    assert not dist.is_initialized()


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_trains_its_deployable_students(name: str) -> None:
    method_cls = METHODS.get(name)
    teacher_spec = STUDENT.as_teacher()
    extra = (create_model(teacher_spec), teacher_spec) if method_cls is ClassicKD else ()
    method = method_cls(STUDENT, MethodOptions(students=2), *extra).train()
    x, y = _batch()
    logits = method(x)
    assert set(logits) >= set(method.student_names) and method.student_names
    assert all(out.shape == (len(y), STUDENT.num_classes) for out in logits.values())
    total, parts = method.loss(logits, y)
    assert torch.isfinite(total) and parts
    total.backward()
    for student in method.student_names:  # every network that can be deployed learns
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.network(student).parameters()), student
