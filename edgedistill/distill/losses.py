"""Distillation losses.

``distill_kl`` is the paper's ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``
averaged per sample (``batchmean``). The paper's reference code uses PyTorch's
default ``mean`` reduction, which divides by batch × classes and so silently
scales the KL term by 1/C; we use the proper per-sample mean and expose the
weight instead. Nothing is detached here: callers decide where gradients stop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(p_teacher ‖ p_student)`` with ``p = softmax(z / T)``, mean over samples."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)
