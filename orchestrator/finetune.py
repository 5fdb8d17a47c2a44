"""The fine-tuning layer: one config, one data bundle and one `finetune` for every compression step.

Pruning retrains between rounds, quantization-aware training trains through fake quantizers, and
distillation is a fine-tune with a teacher; all three are `finetune(model, FinetuneConfig, FinetuneData)`
on top of the trainer (`train.train`), with KD and resumable state handled here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .data import Split
from .distill import KDConfig, kd_loss_fn
from .errors import OrchestratorError
from .train import TrainConfig, train
from .values import Epochs


class FinetuneConfig(TrainConfig):
    """Training after (or between) pruning steps: fine-tune defaults (short, low lr, cosine, no warmup)."""

    epochs: Epochs = 0  # 0: no fine-tuning; fractions of an epoch allowed
    lr: float = Field(0.01, gt=0, le=10)
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1)
    kd: KDConfig | None = None  # distill from FinetuneData.teacher (the dense baseline) while fine-tuning

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(exclude={"kd"}))


@dataclass
class FinetuneData:
    """What a fine-tune (and a data-driven pruning or quantization method) gets: splits, normalization,
    device, the KD teacher, and where to keep resumable state."""

    train: Split | None = None  # retraining and calibration images
    val: Split | None = None  # selection and sensitivity (never the test set)
    normalization: dict = field(default_factory=lambda: {"mean": [0.0] * 3, "std": [1.0] * 3})
    device: str = "cpu"
    progress: bool = False
    work_dir: Path | None = None  # state files of interrupted retraining live here
    teacher: nn.Module | None = None  # for fine-tunes with `kd`
    eval_each_epoch: bool = True  # evaluate `val` after every fine-tune epoch (a pipeline evaluates each step itself)
    log: list[dict] = field(default_factory=list)  # what each step did (rounds, accuracies), for the record

    def require(self, what: str, method: str) -> Split:
        split = getattr(self, what)
        if split is None:
            raise OrchestratorError(f"method {method!r} needs {what} data (pass data=FinetuneData({what}=...))")
        return split


def finetune(model: nn.Module, config: FinetuneConfig, data: FinetuneData | None, tag: str,
             penalty: Callable[[], torch.Tensor] | None = None) -> list[dict]:
    """Fine-tune with masks (if any) held fixed; resumable through `data.work_dir/<tag>.state`.

    The loss is cross-entropy, or the KD loss against `data.teacher` with `config.kd`, plus `penalty()`.
    """
    if not config.epochs:
        return []
    if data is None:
        raise OrchestratorError("fine-tuning needs training data; none was given")
    split = data.require("train", "fine-tuning")
    tc = config.train_config()
    if config.kd is not None:
        if data.teacher is None:
            raise OrchestratorError("finetune.kd is set but no teacher model was given (FinetuneData.teacher)")
        base = kd_loss_fn(data.teacher.to(data.device), config.kd, tc.label_smoothing)
    else:
        base = lambda logits, y, x: F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)  # noqa: E731
    loss_fn = base if penalty is None else (lambda logits, y, x: base(logits, y, x) + penalty())
    state = None
    if data.work_dir:
        Path(data.work_dir).mkdir(parents=True, exist_ok=True)
        state = Path(data.work_dir) / f"{tag}.state"
    history = train(model, split, tc, data.normalization, eval_split=data.val if data.eval_each_epoch else None,
                    device=data.device, progress=data.progress, state_path=state, loss_fn=loss_fn)
    data.log.append({"step": tag, "epochs": config.epochs, **({k: history[-1][k] for k in ("train_loss", "eval_acc")
                                                                if k in history[-1]} if history else {})})
    return history
