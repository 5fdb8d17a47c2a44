"""Knowledge distillation (Hinton et al. 2015): the student matches the teacher's softened outputs.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes. The
teacher (the dense baseline) runs in eval mode without gradients on the same augmented batch.

Teacher logits are cached (`TeacherCache`): the teacher is frozen and a seeded loader yields the same
augmented batches in every fine-tune of a study (epoch e, batch b is a function of the seed), so the
pruning step's fine-tune, the QAT step after it and every later trial ask the teacher the same
questions. Keyed by digests of the teacher's weights and of the batch itself, a hit is exact.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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


def _digest(tensors) -> bytes:
    """Of values, shapes and layouts (a channels_last batch may give other last bits than a contiguous one)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}{t.stride()}".encode())
        h.update(t.cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.digest()


ENTRY_OVERHEAD = 1024  # bytes counted per entry besides its logits (key, dict slot, tensor object)


class TeacherCache:
    """Teacher logits by (teacher weights, input batch), first in first out within `max_bytes`.

    CPU batches only: there a teacher forward costs ~40x the digest of its batch (1.5 MB for 128 CIFAR
    images), on a GPU the forward is cheaper than copying the batch back to digest it."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[tuple[bytes, bytes], torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0
        self.enabled = True  # False: every batch goes to the teacher (benchmarks compare)

    def logits(self, teacher: nn.Module, teacher_key: bytes, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not self.enabled:
            return teacher(x)
        key = (teacher_key, _digest([x]), torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        out = self.entries.get(key)
        if out is not None:  # the stored tensor itself: kd_loss never writes into it
            self.hits += 1
            return out
        self.misses += 1
        out = teacher(x)
        self.entries[key] = out
        self.bytes += out.numel() * out.element_size() + ENTRY_OVERHEAD
        while self.bytes > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size() + ENTRY_OVERHEAD
        return out


TEACHER_CACHE = TeacherCache()  # one per process: a study's trials run one after another in its worker


def kd_loss_fn(teacher: nn.Module, config: KDConfig, label_smoothing: float = 0.0,
               cache: TeacherCache | None = TEACHER_CACHE) -> Callable:
    """A `train(loss_fn=...)` hook: (student logits, labels, inputs) -> KD loss (`cache=None`: no cache)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    key = _digest(list(teacher.state_dict().values())) + type(teacher).__name__.encode() if cache else b""

    def loss_fn(logits, y, x):
        with torch.no_grad():
            teacher_logits = cache.logits(teacher, key, x) if cache else teacher(x)
        return kd_loss(logits, teacher_logits, y, config.temperature, config.alpha, label_smoothing)

    return loss_fn
