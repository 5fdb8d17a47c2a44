"""Pipeline configs: a base checkpoint and typed compression steps.

A step is a one-key mapping (`prune:`, `finetune:` or `quantize:`) validated into `PruneStep`,
`FinetuneStep` or `QuantizeStep`: a discriminated union on the key, and the prune config one on its
`method` (every registered method), so a step is validated once, here, and runs, logs and hashes
as the object it became.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .errors import UNION_TAGS
from .finetune import FinetuneConfig
from .pruning import METHODS
from .quant import QuantConfig
from .qformat import ActBits
from .yamlio import read_mapping

STEPS = ("prune", "finetune", "quantize")

# every registered pruning method's config, told apart by its `method` string (methods register when the
# pruning package is imported, one module each, before this union is built)
PruneMethod = Annotated[Union[tuple(cls for cls, _ in METHODS.values())], Field(discriminator="method")]
UNION_TAGS.update(METHODS)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @property
    def kind(self) -> str:
        return next(iter(type(self).model_fields))

    @property
    def config(self):
        return getattr(self, self.kind)

    def check(self, model) -> None:
        """Refuse what the model makes wrong (a group or layer it lacks) before a pipeline writes or spends
        anything; step names survive the steps before, so the base model answers for every step."""


def step_epochs(step: dict) -> float:
    """Training epochs of a step (its dump, {kind: config}): its fine-tune, times its rounds; a study's clock
    (`runner.TrialRunner.needs`) counts seconds per such epoch, so a method's extra passes cancel out."""
    (body,) = step.values()
    return body["finetune"]["epochs"] * body.get("rounds", 1) if "finetune" in body else body.get("epochs", 0)


class PruneStep(_Step):
    prune: PruneMethod

    def check(self, model) -> None:
        self.prune.check(model)


class FinetuneStep(_Step):
    finetune: FinetuneConfig = FinetuneConfig()


class QuantizeStep(_Step):
    quantize: QuantConfig = QuantConfig()

    def check(self, model) -> None:
        self.quantize.plan(model)


def _step_kind(v: Any) -> str | None:
    if isinstance(v, _Step):
        return v.kind
    if isinstance(v, dict) and len(v) == 1:
        return next(iter(v))
    return None


def _empty_is_default(v: Any) -> Any:  # `- finetune:` in YAML (None) means the defaults
    return {k: ({} if c is None else c) for k, c in v.items()} if isinstance(v, dict) else v


Step = Annotated[Union[Annotated[PruneStep, Tag("prune")], Annotated[FinetuneStep, Tag("finetune")],
                       Annotated[QuantizeStep, Tag("quantize")]],
                 Discriminator(_step_kind, custom_error_type="step",
                               custom_error_message=f"a step is a mapping with one key, one of: {', '.join(STEPS)}")]


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str | None = None  # checkpoint to start from (the CLI may give it instead)
    teacher: str | None = None  # KD teacher checkpoint; default: the base, when a step uses kd
    val_size: int = Field(5000, ge=0)  # held-out training images for per-step evaluation (0: test)
    act_bits: ActBits | None = None  # footprint activation bits when no step quantizes them (32: float maps)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _step_keys(cls, v):
        """Name the bad step or method in the error (a union's own message lists its members' tags)."""
        if not (isinstance(v, dict) and isinstance(v.get("steps"), list)):
            return v
        for i, step in enumerate(v["steps"]):
            if not isinstance(step, dict):  # a typed step, or garbage the union's own message describes
                continue
            kind = _step_kind(step)
            if kind is not None and kind not in STEPS:
                raise ValueError(f"steps[{i}]: unknown step {kind!r}; allowed: {', '.join(STEPS)}")
            cfg = step.get("prune") if kind == "prune" else None
            if kind == "prune" and (cfg is None or isinstance(cfg, dict) and "method" not in cfg):
                raise ValueError(f"steps[{i}].prune needs a 'method' key; allowed methods: {', '.join(METHODS)}")
            if isinstance(cfg, dict) and cfg["method"] not in METHODS:
                raise ValueError(f"steps[{i}].prune: unknown pruning method {cfg['method']!r}; "
                                 f"allowed: {', '.join(METHODS)}")
        return {**v, "steps": [_empty_is_default(s) for s in v["steps"]]}

    @model_validator(mode="after")
    def _check_order(self):
        kinds = [s.kind for s in self.steps]
        if "quantize" in kinds and any(n != "quantize" for n in kinds[kinds.index("quantize"):]):
            raise ValueError("quantize must come after every prune and finetune step (it fixes the weights' grid)")
        if kinds.count("quantize") > 1:
            raise ValueError("at most one quantize step")
        return self

    def uses_kd(self) -> bool:
        """Whether any fine-tune (a finetune step, or a prune/quantize step's own) distills."""
        fts = [s.config if s.kind == "finetune" else getattr(s.config, "finetune", None) for s in self.steps]
        return any(ft is not None and ft.kd is not None for ft in fts)


def load_pipeline(path) -> PipelineConfig:
    return PipelineConfig.model_validate(read_mapping(path, "pipeline"))


__all__ = ["STEPS", "FinetuneStep", "PipelineConfig", "PruneMethod", "PruneStep", "QuantizeStep", "Step",
           "load_pipeline"]
