"""The online teacher of "OD": m cheap students plus a head over their features.

The students' last feature maps are concatenated along channels, then
BatchNorm → ReLU → global average pool → a new linear classifier. The teacher
owns no other parameters than that head; it is never deployed (it is m students
wide), but it is evaluated and checkpointed like any network.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.models.registry import ModelSpec, create_model, register_model


class OnlineTeacherHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.relu(self.bn(torch.cat(features, dim=1)))
        return self.fc(torch.flatten(self.pool(x), 1))


class OnlineEnsemble(nn.Module):
    """m independently initialised students and the online teacher head.

    ``forward`` returns the teacher's logits (so the ensemble evaluates like a
    model); :meth:`all_logits` returns the teacher's and every student's.
    """

    def __init__(self, students: list[nn.Module], num_classes: int) -> None:
        super().__init__()
        if len(students) < 1:
            raise ValueError("the online teacher needs at least one student")
        self.students = nn.ModuleList(students)
        self.head = OnlineTeacherHead(sum(s.num_features for s in students), num_classes)

    def all_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = [s.forward_features(x) for s in self.students]
        student_logits = [s.forward_head(f) for s, f in zip(self.students, features)]
        return self.head(features), student_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head([s.forward_features(x) for s in self.students])


@register_model("online-teacher")
def online_teacher(num_classes: int = 10, in_channels: int = 3, student: dict | None = None, m: int = 4) -> OnlineEnsemble:
    """Registered so that its checkpoint rebuilds like any model: ``student`` is a ModelSpec dict."""
    if student is None:
        raise ValueError("online-teacher needs the student's ModelSpec")
    spec = ModelSpec.from_dict(student)
    return OnlineEnsemble([create_model(spec) for _ in range(m)], num_classes)
