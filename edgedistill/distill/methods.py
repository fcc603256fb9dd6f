"""Training methods: which networks learn together, and their joint loss.

Every method is an ``nn.Module`` whose ``forward`` returns the logits of all
its networks by name, so one optimiser, one AMP scope and one DDP wrapper cover
everything. Network names double as checkpoint names: ``teacher`` (standard
conv), ``student`` / ``student<i>`` (cheap conv), ``online-teacher`` (OD head).

=========  =====================================================================
method     loss (``KL`` = ``T² · KL(softmax(z_a/T) ‖ softmax(z_b/T))``, weight w)
=========  =====================================================================
alone      CE(z, y) — one network, standard or cheap
kd         CE(z_s, y) + w · KL(t ‖ s), t a frozen, trained standard-conv teacher
dml        Σ_i CE(z_i, y) + w · Σ_i KL(detached z_j ‖ z_i), two cheap students
mutual     CE(z_t, y) + CE(z_s, y) + w · [KL(detached t ‖ s) + KL(detached s ‖ t)], DML-style
od         CE(z_T, y) + Σ_j [CE(z_j, y) + w · KL(T ‖ j)], nothing detached,
           z_T the online teacher over m cheap students (the paper's method)
=========  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgedistill.distill.losses import cross_entropy, distill_kl
from edgedistill.errors import EdgeDistillError
from edgedistill.models import ModelSpec, create_model
from edgedistill.models.ensemble import OnlineEnsemble
from edgedistill.utils.names import Registry

Logits = dict[str, torch.Tensor]
LossParts = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MethodOptions:
    temperature: float = 4.0
    kl_weight: float = 1.0
    students: int = 4
    """m, the number of cheap students of ``od``."""
    alone_network: str = "student"
    """What ``alone`` trains: ``student`` (cheap conv) or ``teacher`` (standard conv)."""


class Method(nn.Module):
    """Networks trained together. Subclasses set ``specs``, ``student_names`` and ``teacher_name``."""

    specs: dict[str, ModelSpec]
    student_names: tuple[str, ...] = ()
    """Networks eligible as the deployed student (the best one on validation wins)."""
    teacher_name: str | None = None
    """The network saved as the run's teacher, if any."""

    def __init__(self, options: MethodOptions) -> None:
        super().__init__()
        self.options = options

    def network(self, name: str) -> nn.Module:
        """The network called ``name`` (a submodule of this method)."""
        return getattr(self, name)

    def kl(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.options.kl_weight * distill_kl(student, teacher, self.options.temperature)

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")


@METHODS.register("alone")
class Alone(Method):
    def __init__(self, student_spec: ModelSpec, options: MethodOptions) -> None:
        super().__init__(options)
        if options.alone_network not in ("student", "teacher"):
            raise EdgeDistillError(
                f"alone trains 'student' or 'teacher', not '{options.alone_network}'", "use --network student|teacher"
            )
        spec = student_spec if options.alone_network == "student" else student_spec.as_teacher()
        self.role = options.alone_network
        self.net = create_model(spec)
        self.specs = {self.role: spec}
        if self.role == "student":
            self.student_names = ("student",)
        else:
            self.teacher_name = "teacher"

    def network(self, name: str) -> nn.Module:
        return self.net

    def forward(self, x: torch.Tensor) -> Logits:
        return {self.role: self.net(x)}

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        ce = cross_entropy(logits[self.role], labels)
        return ce, {f"ce/{self.role}": ce}


@METHODS.register("kd")
class ClassicKD(Method):
    """Hinton et al.'s KD from a trained, frozen standard-conv teacher."""

    student_names = ("student",)
    teacher_name = "teacher"

    def __init__(self, student_spec: ModelSpec, options: MethodOptions, teacher: nn.Module, teacher_spec: ModelSpec) -> None:
        super().__init__(options)
        self.student = create_model(student_spec)
        self.teacher_net = teacher.requires_grad_(False).eval()
        self.specs = {"student": student_spec, "teacher": teacher_spec}

    def network(self, name: str) -> nn.Module:
        return self.teacher_net if name == "teacher" else self.student

    def train(self, mode: bool = True) -> ClassicKD:
        super().train(mode)
        self.teacher_net.eval()  # the teacher's BatchNorm statistics stay frozen
        return self

    def forward(self, x: torch.Tensor) -> Logits:
        with torch.no_grad():
            teacher_logits = self.teacher_net(x)
        return {"student": self.student(x), "teacher": teacher_logits}

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        ce = cross_entropy(logits["student"], labels)
        kl = self.kl(logits["student"], logits["teacher"])
        return ce + kl, {"ce/student": ce, "kl/student": kl}


@METHODS.register("dml")
class DeepMutualLearning(Method):
    """Zhang et al.'s DML between two cheap students; each treats the other's output as a fixed target."""

    student_names = ("student1", "student2")

    def __init__(self, student_spec: ModelSpec, options: MethodOptions) -> None:
        super().__init__(options)
        self.student1 = create_model(student_spec)
        self.student2 = create_model(student_spec)
        self.specs = {name: student_spec for name in self.student_names}

    def forward(self, x: torch.Tensor) -> Logits:
        return {"student1": self.student1(x), "student2": self.student2(x)}

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        parts: LossParts = {}
        total = torch.zeros((), device=labels.device)
        for name, other in (("student1", "student2"), ("student2", "student1")):
            parts[f"ce/{name}"] = cross_entropy(logits[name], labels)
            parts[f"kl/{name}"] = self.kl(logits[name], logits[other].detach())
            total = total + parts[f"ce/{name}"] + parts[f"kl/{name}"]
        return total, parts


@METHODS.register("mutual")
class MutualTeacherStudent(Method):
    """A standard-conv teacher and its cheap student learn together from scratch, DML-style.

    Each network distils from the other's current output as a fixed target. With
    nothing detached, the two KL terms also pull each target towards its peer, and
    at T = 4 (weight T² = 16 against CE) that agreement wins early on: measured on
    Fashion-MNIST (ResNet-20, 6000 images, 2 epochs) the pair stalled at 25 % train
    top-1 where the detached form reached 71 %.
    """

    student_names = ("student",)
    teacher_name = "teacher"

    def __init__(self, student_spec: ModelSpec, options: MethodOptions) -> None:
        super().__init__(options)
        self.teacher_net = create_model(student_spec.as_teacher())
        self.student = create_model(student_spec)
        self.specs = {"teacher": student_spec.as_teacher(), "student": student_spec}

    def network(self, name: str) -> nn.Module:
        return self.teacher_net if name == "teacher" else self.student

    def forward(self, x: torch.Tensor) -> Logits:
        return {"teacher": self.teacher_net(x), "student": self.student(x)}

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        t, s = logits["teacher"], logits["student"]
        parts = {
            "ce/teacher": cross_entropy(t, labels),
            "ce/student": cross_entropy(s, labels),
            "kl/student": self.kl(s, t.detach()),
            "kl/teacher": self.kl(t, s.detach()),
        }
        return sum(parts.values()), parts


@METHODS.register("od")
class OnlineDistillation(Method):
    """The paper's OD: m cheap students and an online teacher built from them."""

    teacher_name = "online-teacher"

    def __init__(self, student_spec: ModelSpec, options: MethodOptions) -> None:
        super().__init__(options)
        m = options.students
        if m < 1:
            raise EdgeDistillError(f"od needs at least one student, got --students {m}", "use --students 4 (the paper's m)")
        self.ensemble = OnlineEnsemble([create_model(student_spec) for _ in range(m)], student_spec.num_classes)
        self.student_names = tuple(f"student{i + 1}" for i in range(m))
        teacher_spec = ModelSpec(
            "online-teacher",
            student_spec.num_classes,
            student_spec.in_channels,
            {"student": student_spec.to_dict(), "m": m},
        )
        self.specs = {**{name: student_spec for name in self.student_names}, "online-teacher": teacher_spec}

    def network(self, name: str) -> nn.Module:
        if name == "online-teacher":
            return self.ensemble
        return self.ensemble.students[self.student_names.index(name)]

    def forward(self, x: torch.Tensor) -> Logits:
        teacher, students = self.ensemble.all_logits(x)
        return {"online-teacher": teacher, **dict(zip(self.student_names, students))}

    def loss(self, logits: Logits, labels: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        teacher = logits["online-teacher"]
        parts: LossParts = {"ce/online-teacher": cross_entropy(teacher, labels)}
        for name in self.student_names:
            parts[f"ce/{name}"] = cross_entropy(logits[name], labels)
            parts[f"kl/{name}"] = self.kl(logits[name], teacher)
        return sum(parts.values()), parts

