"""Method registry and the `prune_` entry point.

A method is a pydantic config (its `method` field is the registry key, the same string in the
CLI, YAML configs, MLflow params and Optuna choices) plus a function composing importance,
selection, application and schedule. Adding a method is adding one file that calls `register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..data import Split
from ..distill import KDConfig, kd_loss_fn
from ..errors import OrchestratorError
from ..train import TrainConfig, recalibrate_bn, train
from .core import prunable_layers


Ratio = Annotated[float, Field(ge=0, lt=1)]  # fraction of weights (or channels) removed
GroupRatios = dict[str, Ratio]  # per layer group (models.layer_groups: stem, stage1.., classifier)


class FinetuneConfig(TrainConfig):
    """Training after (or between) pruning steps: fine-tune defaults (short, low lr, cosine, no warmup)."""

    epochs: int | float = Field(0, ge=0, le=100_000)  # 0: no fine-tuning; fractions of an epoch allowed
    lr: float = Field(0.01, gt=0, le=10)
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1)
    kd: KDConfig | None = None  # distill from PruneData.teacher (the dense baseline) while fine-tuning

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(exclude={"kd"}))


class PruneConfig(BaseModel):
    """Base of every method config: strict (unknown keys are rejected by name)."""

    model_config = ConfigDict(extra="forbid")
    method: str
    bn_recalibration: int = Field(0, ge=0)  # training images to re-estimate BN statistics on at the end (0: off)
    structured: ClassVar[bool] = False  # True: returns a smaller dense model (new width spec)

    def needs_data(self) -> bool:
        """Whether the method needs training/calibration data (fine-tuning and BN recalibration count)."""
        ft = getattr(self, "finetune", None)
        return bool(ft and ft.epochs) or self.bn_recalibration > 0


@dataclass
class PruneData:
    """What data-driven methods get: splits, normalization, device, and where to keep resumable state."""

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
            raise OrchestratorError(f"method {method!r} needs {what} data (pass data=PruneData({what}=...))")
        return split


Method = Callable[[nn.Module, PruneConfig, PruneData | None], nn.Module]
METHODS: dict[str, tuple[type[PruneConfig], Method]] = {}


def register(config_cls: type[PruneConfig]):
    """Decorator: register `fn(model, config, data) -> model` under the config's method name."""
    name = config_cls.model_fields["method"].default

    def wrap(fn: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"pruning method {name!r} registered twice")
        METHODS[name] = (config_cls, fn)
        return fn

    return wrap


def parse_config(config: PruneConfig | dict) -> PruneConfig:
    """A validated method config from a dict (YAML, CLI) or a config object."""
    if isinstance(config, PruneConfig):
        return config
    if not isinstance(config, dict) or "method" not in config:
        raise OrchestratorError(f"a pruning config needs a 'method' key; allowed methods: {', '.join(METHODS)}")
    name = config["method"]
    if name not in METHODS:
        raise OrchestratorError(f"unknown pruning method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name][0].model_validate(config)


def prune_(model: nn.Module, config: PruneConfig | dict, data: PruneData | None = None) -> nn.Module:
    """Prune `model` with a registered method; use the returned model.

    Unstructured methods attach masks in place (`weight_orig` + `weight_mask`; call `finalize_` to
    make them permanent). Structured methods return a new, smaller dense model.
    """
    config = parse_config(config)
    prunable_layers(model)
    if config.needs_data() and data is None:
        raise OrchestratorError(f"method {config.method!r} with this config needs data "
                                "(training images for fine-tuning or calibration); none was given")
    model = METHODS[config.method][1](model, config, data)
    if config.bn_recalibration:
        recalibrate_bn(model, data.require("train", "BN recalibration"), data.normalization,
                       config.bn_recalibration, data.device)
    return model


def finetune(model: nn.Module, config: FinetuneConfig, data: PruneData | None, tag: str,
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
            raise OrchestratorError("finetune.kd is set but no teacher model was given (PruneData.teacher)")
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
