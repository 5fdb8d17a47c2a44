"""Search spaces (search_spaces/*.yaml): what a study varies, what it optimizes, what it may spend.

Each trial's choices become a pipeline (prune -> quantize, each with its fine-tune), so a trial
is exactly what `orchestrator pipeline` runs. The parameter names (method, ratio, finetune_epochs,
kd, bits, act_bits) are the same strings in Optuna, MLflow and the pipeline configs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import OrchestratorError
from ..pipeline import PipelineConfig
from ..pruning import METHODS
from ..pruning.registry import FinetuneConfig
from ..yamlio import read_mapping


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: float = Field(ge=0, lt=1)
    high: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        return self


class Dimensions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: list[str] = Field(["none", "global_magnitude"], min_length=1)  # "none": no pruning
    ratio: Range | list[float] = Range(low=0.3, high=0.9)  # a range, or the values of a grid
    finetune_epochs: list[int] = Field([0], min_length=1)  # per fine-tune (after pruning, during QAT)
    kd: list[bool] = Field([False], min_length=1)  # distill from the base model in every fine-tune
    bits: list[int] = Field([32], min_length=1)  # weight bits: 32 float, 16 fp16, 2..8 int, 1 binary
    act_bits: list[int] = Field([32], min_length=1)  # activation bits: 32 float, else 2..16

    @field_validator("method")
    @classmethod
    def _methods(cls, v):
        bad = [m for m in v if m != "none" and m not in METHODS]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; allowed: none, {', '.join(METHODS)}")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratios(cls, v):
        if isinstance(v, list) and (not v or any(not 0 <= r < 1 for r in v)):
            raise ValueError(f"ratio values must be in [0, 1), got {v}")
        return v

    @field_validator("finetune_epochs")
    @classmethod
    def _epochs(cls, v):
        if any(e < 0 for e in v):
            raise ValueError(f"finetune_epochs must be >= 0, got {v}")
        return v

    @field_validator("bits")
    @classmethod
    def _bits(cls, v):
        if any(b not in (1, 16, 32) and not 2 <= b <= 8 for b in v):
            raise ValueError(f"bits must be 32, 16, 2..8 or 1, got {v}")
        return v

    @field_validator("act_bits")
    @classmethod
    def _act_bits(cls, v):
        if any(b != 32 and not 2 <= b <= 16 for b in v):
            raise ValueError(f"act_bits must be 32 or 2..16, got {v}")
        return v


class Sampler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["nsga2", "tpe", "random", "grid"] = "nsga2"
    seed: int = Field(0, ge=0)
    population: int = Field(8, ge=2)  # NSGA-II generation size


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trials: int = Field(ge=1)  # finished trials (complete or failed) the study stops at
    timeout_minutes: float | None = Field(None, gt=0)  # per `study run` invocation


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # study name (Optuna and MLflow)
    dataset: Literal["cifar10", "cifar100"] = "cifar10"
    base: str  # checkpoint every trial starts from (and the KD teacher)
    val_size: int = Field(5000, ge=1)  # held-out training images the objectives are measured on
    finetune: FinetuneConfig = FinetuneConfig()  # lr, batch size, ... of every fine-tune (epochs come from the trial)
    dimensions: Dimensions = Dimensions()
    objectives: list[Literal["accuracy", "footprint", "macs"]] = ["accuracy", "footprint"]
    sampler: Sampler = Sampler()
    budget: Budget

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v):
        if len(set(v)) != len(v) or "accuracy" not in v or len(v) < 2:
            raise ValueError(f"objectives must include accuracy and at least one cost, without repeats; got {v}")
        return v

    def directions(self) -> list[str]:
        return ["maximize" if o == "accuracy" else "minimize" for o in self.objectives]

    def grid(self) -> dict[str, list]:
        d = self.dimensions
        if not isinstance(d.ratio, list):
            raise OrchestratorError("the grid sampler needs ratio as a list of values, not a range")
        return {"method": d.method, "ratio": d.ratio, "finetune_epochs": d.finetune_epochs, "kd": d.kd,
                "bits": d.bits, "act_bits": d.act_bits}

    def suggest(self, trial) -> PipelineConfig:
        """The trial's pipeline. Every dimension is always suggested (a fixed space suits NSGA-II and grids)."""
        d = self.dimensions
        method = trial.suggest_categorical("method", d.method)
        ratio = (trial.suggest_categorical("ratio", d.ratio) if isinstance(d.ratio, list)
                 else trial.suggest_float("ratio", d.ratio.low, d.ratio.high))
        epochs = trial.suggest_categorical("finetune_epochs", d.finetune_epochs)
        kd = trial.suggest_categorical("kd", d.kd)
        bits = trial.suggest_categorical("bits", d.bits)
        act_bits = trial.suggest_categorical("act_bits", d.act_bits)
        return self.pipeline(method, ratio, epochs, kd, bits, act_bits)

    def validation_warning(self) -> str | None:
        """Why validation accuracies are optimistic, when the base was trained on the validation images."""
        from ..checkpoint import load_checkpoint

        try:
            config = load_checkpoint(self.base).config or {}
        except Exception:  # a missing or unreadable base fails later with its own clear error
            return None
        seen = config.get("val_size")
        if "train" in config and seen is not None and seen < self.val_size:
            return (f"the base {self.base} was trained with val_size={seen}, so it saw the last {self.val_size:,} "
                    f"training images this study validates on: validation accuracies are optimistic (train the base "
                    f"with --val-size {self.val_size}); test accuracies are unaffected")
        return None

    def pipeline(self, method: str, ratio: float, epochs: int, kd: bool, bits: int, act_bits: int) -> PipelineConfig:
        ft = {**self.finetune.model_dump(exclude={"kd"}), "epochs": epochs, "kd": {} if kd and epochs else None}
        steps = []
        if method != "none":
            steps.append({"prune": {"method": method, "ratio": ratio, "finetune": ft}})
        if bits < 32 or act_bits < 32:
            q = {"method": "qat" if epochs else "ptq", "finetune": ft, "act_bits": act_bits if act_bits < 32 else None}
            q.update({1: {"format": "binary"}, 16: {"format": "fp16"}, 32: {"format": "fp32"}}.get(
                bits, {"format": "int", "bits": bits}))
            steps.append({"quantize": q})
        if not steps:
            steps.append({"finetune": {**ft, "epochs": 0}})  # the base model itself
        return PipelineConfig(base=self.base, val_size=self.val_size, steps=steps)


def load_space(path) -> SearchSpace:
    return SearchSpace.model_validate(read_mapping(path, "search space"))
