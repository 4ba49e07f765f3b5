"""Distillation from a trained teacher: ``pnn-train --teacher RUN``.

The student's objective becomes

    (1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + lambda * boundary terms

(Hinton et al., 2015: the T^2 keeps the soft term's gradient on the scale of the hard
one's as T changes). The teacher is any finished pnn-train run on the same data (a ReLU
network, or a PNN), loaded by :func:`pnn_ext.train.load_run`, frozen and evaluated in eval
mode on the very batch the student sees (augmentation included). It answers the paper's
open question of moving a trained network into a PNN without copying its weights
(``--init-from`` copies them; the two combine).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSpec
from .run import load_run


class TeacherError(ValueError):
    """A --teacher run that cannot teach this one (other data, other classes)."""


def load_teacher(path: str, spec: DataSpec, device: torch.device) -> nn.Module:
    """The frozen teacher model of run ``path`` on ``device``; its data must be this run's."""
    teacher, _, tspec = load_run(path)
    if (tspec.num_classes, tuple(tspec.in_shape)) != (spec.num_classes, tuple(spec.in_shape)):
        raise TeacherError(f"--teacher {path}: trained on {tspec.name} ({tspec.num_classes} classes, samples "
                           f"{tuple(tspec.in_shape)}), this run is on {spec.name} ({spec.num_classes} classes, "
                           f"samples {tuple(spec.in_shape)})")
    if tspec.name != spec.name:
        raise TeacherError(f"--teacher {path}: trained on {tspec.name}, this run is on {spec.name}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).eval()


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch, in float32."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2
