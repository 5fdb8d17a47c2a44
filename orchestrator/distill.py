"""Knowledge distillation (Hinton et al. 2015): the student matches the teacher's softened outputs.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes. The
teacher (the dense baseline) runs in eval mode without gradients on the same augmented batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class KDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(4.0, gt=0, le=100)  # softmax temperature T of both nets
    alpha: float = Field(0.9, ge=0, le=1)  # weight of the soft (teacher) term; 0 = plain cross-entropy


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t
    return alpha * soft + (1 - alpha) * hard


def kd_loss_fn(teacher: nn.Module, config: KDConfig, label_smoothing: float = 0.0) -> Callable:
    """A `train(loss_fn=...)` hook: (student logits, labels, inputs) -> KD loss."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits, y, x):
        with torch.no_grad():
            teacher_logits = teacher(x)
        return kd_loss(logits, teacher_logits, y, config.temperature, config.alpha, label_smoothing)

    return loss_fn
