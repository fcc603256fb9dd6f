"""Which trained networks a bundle holds: the deployed student and the standard-conv teacher.

The teacher of the deploy comparison is always a standard-conv network of the
student's architecture. Runs of ``mutual``, ``kd`` and ``alone --network
teacher`` trained one; ``od`` and ``dml`` did not (OD's online teacher is m
students wide and never deployed). For those, the bundle carries the
standard-conv architecture with freshly initialised weights as a *latency and
memory* reference, says so in the manifest, and reports no accuracy for it —
or takes a trained one from ``--teacher-checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edgedistill.checkpoints import ModelCheckpoint, load_model_checkpoint, require_standard_teacher, resolve_checkpoint
from edgedistill.errors import CheckpointError
from edgedistill.models import create_model

MODEL_ROLES = ("student", "teacher")


@dataclass
class ModelSource:
    role: str
    checkpoint: ModelCheckpoint
    trained: bool
    note: str = ""


def untrained_reference(student: ModelCheckpoint) -> ModelSource:
    """The student's architecture with standard convs and seed-0 weights (the same every time,
    so the bundle and the PyTorch reference of ``bench`` measure the same network)."""
    spec = student.spec.as_teacher()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = create_model(spec).state_dict()
    checkpoint = ModelCheckpoint(spec, state, student.data, {}, "teacher", "", "untrained reference")
    note = (
        "untrained standard-conv reference: this run trained no standard-conv network, so its latency and memory "
        "are valid and its accuracy is not (pass --teacher-checkpoint for a trained one)"
    )
    return ModelSource("teacher", checkpoint, trained=False, note=note)


def _load_role(run_dir: Path, role: str, which: str, given: dict[str, ModelCheckpoint]) -> ModelCheckpoint:
    if role not in given:
        given[role] = load_model_checkpoint(resolve_checkpoint(run_dir, role, which))
    return given[role]


def resolve_sources(
    source: str | Path, roles: tuple[str, ...], which: str = "best", teacher_checkpoint: str | None = None
) -> dict[str, ModelSource]:
    """The networks of ``roles`` from a run directory, or from a checkpoint file and its siblings."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {source}", "pass the --out of 'edgedistill train'")
    given: dict[str, ModelCheckpoint] = {}
    run_dir = source
    if source.is_file():
        checkpoint = load_model_checkpoint(source)
        given["student" if checkpoint.spec.is_student else "teacher"] = checkpoint
        run_dir = source.parent
    if teacher_checkpoint:
        given["teacher"] = load_model_checkpoint(resolve_checkpoint(teacher_checkpoint, "teacher", which))
    missing = [role for role in roles if role not in given and not (run_dir / f"{role}-{which}.pt").is_file()]
    if "student" in missing and (run_dir / "config.yaml").is_file() and not (run_dir / "summary.json").is_file():
        raise CheckpointError(f"run {run_dir} is incomplete: its training stopped before it saved student-{which}.pt",
                              f"finish it with 'edgedistill train --resume --out {run_dir}', then export")
    if "student" in missing and (run_dir / f"teacher-{which}.pt").is_file():
        raise CheckpointError(f"{run_dir} trained only a standard-conv network", "export it with --model teacher")
    found: dict[str, ModelSource] = {}
    for role in roles:
        if role in given or (run_dir / f"{role}-{which}.pt").is_file() or role == "student":
            found[role] = ModelSource(role, _load_role(run_dir, role, which, given), trained=True)
        else:  # a teacher the run never trained
            found[role] = untrained_reference(_load_role(run_dir, "student", which, given))
    if "teacher" in found and found["teacher"].trained:
        reference = found["student"].checkpoint.data if "student" in found else found["teacher"].checkpoint.data
        require_standard_teacher(found["teacher"].checkpoint, reference, f"the teacher ({found['teacher'].checkpoint.source})")
    return found
