"""Method registry and the `prune_` entry point.

A method is a pydantic config (its `method` field is the registry key, the same string in the
CLI, YAML configs, MLflow params and Optuna choices) plus a function composing importance,
selection, application and schedule. Adding a method is adding one file that calls `register`.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import OrchestratorError
from ..finetune import FinetuneData
from ..train import recalibrate_bn
from ..values import Ratio
from .core import prunable_layers


GroupRatios = dict[str, Ratio]  # per layer group (models.layer_groups: stem, stage1.., classifier)


class PruneConfig(BaseModel):
    """Base of every method config: strict (unknown keys are rejected by name)."""

    model_config = ConfigDict(extra="forbid")
    method: str
    bn_recalibration: int = Field(0, ge=0)  # training images to re-estimate BN statistics on at the end (0: off)
    structured: ClassVar[bool] = False  # True: returns a smaller dense model (new width spec)
    families: ClassVar[tuple[str, ...] | None] = None  # the model families (models.FAMILIES) it prunes; None: all

    @classmethod
    def supports(cls, model: nn.Module) -> str | None:
        """None when the method can prune `model`, else why not (one line)."""
        from ..models import family_of

        family = family_of(getattr(model, "arch", ""))
        if cls.families is None or family in cls.families:
            return None
        what = f"{family} models" if family else "this model"
        return f"method {cls.model_fields['method'].default!r} does not prune {what}; it prunes {', '.join(cls.families)}"

    def check(self, model: nn.Module) -> None:
        """Refuse a model this config cannot prune (its family, names it lacks): a pipeline asks before any work."""
        refused = self.supports(model)
        if refused:
            raise OrchestratorError(refused)

    def needs_data(self) -> bool:
        """Whether the method needs training/calibration data (fine-tuning and BN recalibration count)."""
        ft = getattr(self, "finetune", None)
        return bool(ft and ft.epochs) or self.bn_recalibration > 0


Method = Callable[[nn.Module, PruneConfig, FinetuneData | None], nn.Module]
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


def prune_(model: nn.Module, config: PruneConfig | dict, data: FinetuneData | None = None) -> nn.Module:
    """Prune `model` with a registered method; use the returned model.

    Unstructured methods attach masks in place (`weight_orig` + `weight_mask`; call `finalize_` to
    make them permanent). Structured methods return a new, smaller dense model.
    """
    config = parse_config(config)
    config.check(model)
    prunable_layers(model)
    if config.needs_data() and data is None:
        raise OrchestratorError(f"method {config.method!r} with this config needs data "
                                "(training images for fine-tuning or calibration); none was given")
    model = METHODS[config.method][1](model, config, data)
    if config.bn_recalibration:
        recalibrate_bn(model, data.require("train", "BN recalibration"), data.normalization,
                       config.bn_recalibration, data.device)
    return model
