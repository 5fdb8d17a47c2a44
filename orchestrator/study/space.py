"""Search spaces (search_spaces/*.yaml): what a study varies, what it optimizes, what it may spend.

Each trial's choices become a pipeline ([channel removal] -> [sparsity] -> [quantization], each with
its own fine-tune budget, fractions of an epoch allowed), so a trial is exactly what `orchestrator
pipeline` runs. Per-layer allocation takes few dimensions: a global ratio times a multiplier per
layer group (`group_scale`), and bits per group (`group_bits`). The parameter names (method, ratio,
scale_<group>, channel_ratio, channel_epochs, finetune_epochs, quant_epochs, kd, bits, bits_<group>,
act_bits) are the same strings in Optuna and MLflow; search_spaces/README.md lists every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import OrchestratorError
from ..models import layer_groups
from ..pipeline import PipelineConfig
from ..pruning import METHODS
from ..finetune import FinetuneConfig
from .autostart import AutoStart
from ..qformat import FLOAT, ActBits, WeightBits
from ..values import Epochs, Ratio
from ..yamlio import read_mapping


MAX_GROUP_RATIO = 0.98  # a group's ratio (global ratio x its multiplier) is capped here


T = TypeVar("T")
Choices = Annotated[list[T], Field(min_length=1)]  # a searched dimension lists at least one value


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: Ratio
    high: Ratio
    step: float | None = Field(None, gt=0, lt=1)  # a grid step: values low, low + step, ..., high

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        if self.step is not None:
            n = (self.high - self.low) / self.step
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"step={self.step} does not divide high - low = {self.high - self.low:.6g}")
        return self


class Channels(BaseModel):
    """A channel-removal step before the sparsity step (composition): its method, ratios and fine-tune."""

    model_config = ConfigDict(extra="forbid")
    method: str = "l1_filter"  # a structured method
    ratio: Range | Choices[Ratio] = [0.0, 0.25, 0.5]  # fraction of each block's inner channels removed (0: skipped)
    finetune_epochs: Choices[Epochs] = [0]  # its own fine-tune budget (epochs, fractions allowed)

    @field_validator("method")
    @classmethod
    def _structured(cls, v):
        if v not in METHODS or not METHODS[v][0].structured:
            raise ValueError(f"channels.method {v!r} is not a structured method; allowed: "
                             + ", ".join(m for m, (c, _) in METHODS.items() if c.structured))
        return v


class Dimensions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: list[str] = Field(["none", "global_magnitude"], min_length=1)  # "none": no pruning
    ratio: Range | Choices[Ratio] = Range(low=0.3, high=0.9)  # a range (optionally on a grid step), or values
    group_scale: dict[str, Choices[Annotated[float, Field(ge=0, le=10)]]] = {}  # per layer group: multipliers
    # of `ratio` searched for that group
    finetune_epochs: Choices[Epochs] = [0]  # after pruning (epochs; fractions like 0.25 allowed)
    quant_epochs: Choices[Epochs] | None = None  # QAT epochs (0: PTQ); default: the trial's finetune_epochs
    kd: Choices[bool] = [False]  # distill from the base model in every fine-tune
    bits: Choices[WeightBits] = [FLOAT]  # weight precision: 32 float, 16 fp16, 2..8 int, 1 binary
    group_bits: dict[str, WeightBits | Choices[WeightBits]] = {}  # per layer group: fixed bits, or a list searched
    # (applied when `bits` is below 16)
    act_bits: Choices[ActBits] = [FLOAT]  # activation bits: 32 float, else 2..16
    group_act_bits: dict[str, ActBits | Choices[ActBits]] = {}  # per layer group: activation bits (2..16), fixed
    # or a list searched
    weight_scale: Choices[Literal["max", "mse"]] | None = None  # searched int weight ranges (default: quantize's)
    channels: Channels | None = None  # composition: channel removal, then `method`'s sparsity, then quantization

    @field_validator("method")
    @classmethod
    def _methods(cls, v):
        bad = [m for m in v if m != "none" and m not in METHODS]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; allowed: none, {', '.join(METHODS)}")
        return v

    @model_validator(mode="after")
    def _act_groups_need_act_bits(self):
        if self.group_act_bits and FLOAT in self.act_bits:
            raise ValueError(f"group_act_bits needs quantized activations: act_bits {self.act_bits} holds 32 (float)")
        for g, v in self.group_act_bits.items():
            if FLOAT in (v if isinstance(v, list) else [v]):
                raise ValueError(f"group_act_bits.{g} holds 32: a group's maps are quantized (2..16)")
        return self

    def groups(self) -> set[str]:
        return set(self.group_scale) | set(self.group_bits) | set(self.group_act_bits)


class QuantOptions(BaseModel):
    """What every trial's quantization step shares (its bits and epochs come from the trial)."""

    model_config = ConfigDict(extra="forbid")
    weight_scale: Literal["max", "mse"] = "max"  # int weights' per-channel range: max |w| or least-squares clipping
    act_scale: Literal["max", "mse"] = "max"  # activation ranges: running max |x| or least-squares clipping
    calibration_images: int = Field(512, ge=1)  # PTQ activation ranges from this many training images


class Constraints(BaseModel):
    """Feasibility given to the sampler as Optuna constraints: the budget goes where the answer is."""

    model_config = ConfigDict(extra="forbid")
    max_accuracy_drop: float | None = Field(None, gt=0, lt=1)  # validation accuracy at most this far below
    # the base's (a fraction: 0.05 = 5 points); trials below it are infeasible and never on the front


class Sampler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["nsga2", "tpe", "gp", "random", "grid"] = "tpe"  # the best hypervolume at 20 and 30 trials,
    # after the automatic start or without it (benchmarks/sampler_table.py, docs/studies.md)
    seed: int = Field(0, ge=0)
    population: int = Field(8, ge=2)  # NSGA-II generation size
    start: Literal["auto", "none"] | list[dict[str, float | int | bool | str]] = "auto"  # what a new study runs
    # first. auto: K points of the front predicted from the base's per-group sensitivities (`sampler.auto`);
    # a list: points with every parameter given (a listed parameter may take a value outside its choices
    # there, e.g. a long fine-tune at one corner: that trial runs it, the sampler never proposes it); none
    auto: AutoStart = AutoStart()  # how `start: auto` measures and spreads its points
    warm_start: str | None = Field(None, min_length=1)  # a finished study (same storage, same parameters) whose
    # feasible front this study runs first, on purpose
    veto: float | None = Field(1.0, ge=0, le=100)  # points of screened accuracy: a sampler proposal that a
    # finished trial beats by more than this on the zero-shot screen, at no larger footprint, is predicted
    # dominated, and at a larger one that fell below the floor, infeasible: not trained (PRUNED, no budget
    # spent); null: every proposal trains

    @property
    def points(self) -> list[dict]:
        """The hand-written start points (none for `auto` and `none`)."""
        return self.start if isinstance(self.start, list) else []


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trials: int = Field(ge=1)  # finished trials (complete or failed) the study stops at
    timeout_minutes: float | None = Field(None, gt=0)  # per `study run`, its automatic start included; no trial
    # starts after it (the running one finishes)


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # study name (Optuna and MLflow)
    dataset: Literal["cifar10", "cifar100"] = "cifar10"
    base: str  # checkpoint every trial starts from (and the KD teacher)
    val_size: int = Field(5000, ge=1)  # held-out training images the objectives are measured on
    finetune: FinetuneConfig = FinetuneConfig()  # lr, batch size, ... of every fine-tune (epochs come from the trial)
    quantize: QuantOptions = QuantOptions()
    dimensions: Dimensions = Dimensions()
    constraints: Constraints = Constraints()
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

    def check_base(self, model) -> None:
        """Per-group values must name groups the base model has, and every method must prune its family:
        checked before any trial runs."""
        d = self.dimensions
        for key, method in [("method", m) for m in d.method if m != "none"] + (
                [("channels.method", d.channels.method)] if d.channels else []):
            refused = METHODS[method][0].supports(model)
            if refused:
                raise OrchestratorError(f"dimensions.{key}: {refused}; the base {self.base} is {model.arch}")
        groups = layer_groups(model)
        for key in ("group_scale", "group_bits", "group_act_bits"):
            unknown = [g for g in getattr(self.dimensions, key) if g not in groups]
            if unknown:
                raise OrchestratorError(f"dimensions.{key}.{unknown[0]}: the base {self.base} ({model.arch}) has no "
                                        f"layer group {unknown[0]!r}; groups: {', '.join(groups)}")

    def params(self) -> dict[str, list | Range]:
        """Every Optuna parameter of the space, by name, with its choices (a list) or range."""
        d = self.dimensions
        out = {"method": d.method, "ratio": d.ratio, **{f"scale_{g}": v for g, v in d.group_scale.items()}}
        if d.channels:
            out.update(channel_ratio=d.channels.ratio, channel_epochs=d.channels.finetune_epochs)
        out["finetune_epochs"] = d.finetune_epochs
        if d.quant_epochs is not None:
            out["quant_epochs"] = d.quant_epochs
        out.update(kd=d.kd, bits=d.bits)
        out.update({f"bits_{g}": b for g, b in d.group_bits.items() if isinstance(b, list)})
        out["act_bits"] = d.act_bits
        out.update({f"act_{g}": b for g, b in d.group_act_bits.items() if isinstance(b, list)})
        if d.weight_scale is not None:
            out["weight_scale"] = d.weight_scale
        return out

    @model_validator(mode="after")
    def _auto_points(self):
        k = self.sampler.auto.points
        if self.sampler.start == "auto" and k is not None and k > self.budget.trials:
            raise ValueError(f"sampler.auto.points={k} is more than budget.trials={self.budget.trials}: every "
                             "start point is a trial")
        return self

    @model_validator(mode="after")
    def _start_points(self):
        params = self.params()
        for i, point in enumerate(self.sampler.points):
            for k, v in point.items():
                if k not in params:
                    raise ValueError(f"sampler.start[{i}].{k} is not a parameter of this space; allowed: "
                                     f"{', '.join(params)}")
                choices = params[k]
                if isinstance(choices, Range):
                    if not choices.low <= v <= choices.high:
                        raise ValueError(f"sampler.start[{i}].{k}={v!r} is outside the space: {choices}")
                elif not _listed(v, choices):  # a value the sampler never proposes: run once, for this point
                    if self.sampler.name == "grid":
                        raise ValueError(f"sampler.start[{i}].{k}={v!r} is not in {choices}: a grid runs its "
                                         "values only")
                    if any(_kind(v) != _kind(c) for c in choices):
                        raise ValueError(f"sampler.start[{i}].{k}={v!r} is not of the type of {choices}")
                    self._check_value(k, v, f"sampler.start[{i}].{k}")
            missing = [k for k in params if k not in point]
            if missing:
                raise ValueError(f"sampler.start[{i}] lacks {', '.join(missing)}")
        return self

    def _check_value(self, name: str, value, where: str) -> None:
        """`value` checked by the rules of parameter `name`'s dimension, as if it were its only choice."""
        d = self.dimensions.model_dump()
        for prefix, key in (("scale_", "group_scale"), ("bits_", "group_bits"), ("act_", "group_act_bits")):
            if name.startswith(prefix) and name[len(prefix):] in d[key]:
                d[key][name[len(prefix):]] = [value]
                break
        else:
            field = {"channel_ratio": ("channels", "ratio"), "channel_epochs": ("channels", "finetune_epochs")}
            outer, inner = field.get(name, (None, name))
            (d[outer] if outer else d)[inner] = [value]
        try:
            Dimensions.model_validate(d)
        except ValidationError as exc:
            raise ValueError(f"{where}={value!r}: {exc.errors()[0]['msg']}") from None

    def start_values(self) -> dict[str, list]:
        """Per listed parameter, the values only start points give it (outside its searched choices)."""
        out: dict[str, list] = {}
        for name, choices in self.params().items():
            if isinstance(choices, list):
                extra = [p[name] for p in self.sampler.points if not _listed(p[name], choices)]
                if extra:
                    out[name] = list(dict.fromkeys(extra))
        return out

    def suggested(self) -> dict[str, list | Range]:
        """`params()` as Optuna sees them: each list with the values only start points give it appended
        (Optuna keeps one set of choices per parameter in a study; `sampler.SearchSampler` keeps them unproposed)."""
        extra = self.start_values()
        return {k: [*v, *extra.get(k, [])] if isinstance(v, list) else v for k, v in self.params().items()}

    def grid(self) -> dict[str, list]:
        grid = self.params()
        for k, v in grid.items():
            if isinstance(v, Range):
                if v.step is None:
                    raise OrchestratorError(f"the grid sampler needs {k} as a list of values or a range with a step")
                grid[k] = [round(v.low + i * v.step, 6) for i in range(round((v.high - v.low) / v.step) + 1)]
        return grid

    def suggest(self, trial) -> PipelineConfig:
        """The trial's pipeline. Every parameter of `params()` is always suggested, in its order (a fixed space
        suits NSGA-II and grids); parameters a pipeline does not use (the ratio of "none") do not change it, and
        trials are compared by their pipelines. Lists come with their start-only values (`suggested`)."""
        def suggest(name, choices):  # a list: categorical; a range: float, on its step if it has one
            if isinstance(choices, list):
                return trial.suggest_categorical(name, choices)
            value = trial.suggest_float(name, choices.low, choices.high, step=choices.step)
            # Optuna's grid value low + k * step carries float noise (0.7 + 2 * 0.05 = 0.7999999999999999), which
            # would give a start point's 0.8 another pipeline: another step-cache entry, and no repeat match
            return value if choices.step is None else round(value, 6)

        return self.pipeline({k: suggest(k, v) for k, v in self.suggested().items()})

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

    def pipeline(self, params: dict) -> PipelineConfig:
        """The pipeline of one point of the space: [channel removal] -> [sparsity] -> [quantization]."""
        d = self.dimensions
        kd = params.get("kd", False)

        def ft(epochs):
            return {**self.finetune.model_dump(exclude={"kd"}), "epochs": epochs, "kd": {} if kd and epochs else None}

        epochs = params.get("finetune_epochs", 0)
        steps = []
        if d.channels and params.get("channel_ratio", 0) > 0:
            steps.append({"prune": {"method": d.channels.method, "ratio": params["channel_ratio"],
                                    "finetune": ft(params.get("channel_epochs", 0))}})
        method, r = params.get("method", "none"), params.get("ratio", 0.0)
        if method != "none":
            prune = {"method": method, "ratio": r, "finetune": ft(epochs)}
            scales = {g: params[f"scale_{g}"] for g in d.group_scale if f"scale_{g}" in params}
            if scales and "group_ratios" in METHODS[method][0].model_fields:  # a global ratio times per-group
                # multipliers: few dimensions, per-layer allocation (methods without group ratios ignore them)
                prune["group_ratios"] = {g: round(min(MAX_GROUP_RATIO, r * s), 4) for g, s in scales.items()}
            steps.append({"prune": prune})
        last = next((s["prune"] for s in reversed(steps) if "prune" in s), None)
        if last is not None and not last["finetune"]["epochs"] and self.sampler.auto.bn_images:
            last["bn_recalibration"] = self.sampler.auto.bn_images  # nothing trains the pruned model's BN
            # statistics: re-estimated as the screen does, so a zero-epoch trial is the model it measured
        bits, act_bits = params.get("bits", FLOAT), params.get("act_bits", FLOAT)
        group_bits = {g: params.get(f"bits_{g}", b) for g, b in d.group_bits.items()}
        group_bits = {g: b for g, b in group_bits.items() if isinstance(b, int)}  # a searched one the params lack
        if bits < FLOAT or act_bits < FLOAT:
            q_epochs = params.get("quant_epochs", epochs)
            q = {"method": "qat" if q_epochs else "ptq", "finetune": ft(q_epochs),
                 "bits": bits, "act_bits": act_bits, **self.quantize.model_dump()}
            if "weight_scale" in params:
                q["weight_scale"] = params["weight_scale"]
            if group_bits and bits < 16:
                q["group_bits"] = group_bits
            group_act = {g: params.get(f"act_{g}", b) for g, b in d.group_act_bits.items()}
            group_act = {g: b for g, b in group_act.items() if isinstance(b, int)}
            if group_act and act_bits < FLOAT:
                q["group_act_bits"] = group_act
            steps.append({"quantize": q})
        if not steps:
            steps.append({"finetune": {**ft(0), "epochs": 0}})  # the base model itself
        return PipelineConfig(base=self.base, val_size=self.val_size, steps=steps)


def _listed(value, choices: list) -> bool:
    """`value` is one of `choices`, type included (True is not 1, 1 is 1.0)."""
    return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)


def _kind(value) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else "str"


def load_space(path, base=None, name: str | None = None) -> SearchSpace:
    """The space of a YAML file; `base` runs the same file on another checkpoint, as its own study (`name`,
    default `<name>-<checkpoint stem>`, so the two never mix trials)."""
    data = read_mapping(path, "search space")
    if base is not None:
        data["base"] = str(base)
        if name is None and isinstance(data.get("name"), str):
            name = f"{data['name']}-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(base).stem)}"
    if name is not None:
        data["name"] = name
    return SearchSpace.model_validate(data)
