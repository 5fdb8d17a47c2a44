"""`quantize_(model, config, data=None)`: post-training quantization (PTQ) and quantization-aware training (QAT).

Weights are quantized per output channel to a precision in bits (`qformat.WeightBits`: 16 fp16, 8..2
symmetric int, 1 binary +-scale; 32 leaves them as they are); `layer_bits` gives a precision per layer name (mixed precision, what studies search over). By
default the first conv and the classifier keep 8 bits (`ends_bits`), as in most of the low-bit
literature, since they are small and the most sensitive. Activations (each conv/linear input) are
quantized to `act_bits` (32: float) with ranges calibrated on a few training batches (PTQ) or learned during
QAT. The result carries `weight_format`/`weight_bits`/`weight_scale`, which footprint and export
read, and `act_bits`, which footprint uses for the feature maps.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from ..errors import OrchestratorError
from ..loader import first_batches
from ..models import layer_groups
from ..pruning.core import finalize_, prunable_layers
from ..finetune import FinetuneConfig, FinetuneData, finetune
from ..qformat import (FLOAT, FP32, WEIGHT_DESCRIPTION, WEIGHT_FORMATS, ActBits, ActQuant, WeightBits,
                       attach_act_quant_, format_of, quantize_weight_, set_act_bits_)
from .fake import fake_quantize_weight_, strip_weight_fake_quant_

LEGACY_FORMATS = {"int": None, "fp32": 32, "fp16": 16, "binary": 1}  # older records' (format, bits): precision


class QuantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["ptq", "qat"] = "ptq"
    bits: WeightBits = 8  # weight precision: 16 fp16, 8..2 int, 1 binary, 32 weights left as they are
    layer_bits: dict[str, WeightBits] = {}  # per layer name: its precision, overriding `bits` (mixed precision)
    group_bits: dict[str, WeightBits] = {}  # per layer group (stem, stage1.., classifier); layer_bits win
    ends_bits: WeightBits | None = 8  # first conv and classifier when `bits` is int or binary; None: like the others
    act_bits: ActBits = FLOAT  # activations (conv/linear inputs): 2..16, 32 float
    group_act_bits: dict[str, ActBits] = {}  # per layer group: bits of its layers' inputs (needs act_bits < 32)
    weight_scale: Literal["max", "mse"] = "max"  # int codes' per-channel range: max |w|, or the clipped range
    # of least squared error (searched per channel; much better at 2-3 bits, also during QAT)
    act_scale: Literal["max", "mse"] = "max"  # activation ranges: the running max |x|, or the running range of
    # least squared error on each batch (`qformat.mse_range`; at 4 bits the max range wastes levels on outliers)
    calibration_images: int = Field(512, ge=1)  # PTQ activation ranges from this many training images
    finetune: FinetuneConfig = FinetuneConfig()  # QAT: training with fake quantization (kd allowed)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, v):
        """Records written before precision had one encoding: {'format': f, 'bits': b} and act_bits None."""
        if isinstance(v, dict) and ("format" in v or v.get("act_bits", 0) is None):
            v = dict(v)
            if "format" in v:
                fmt, bits = v.pop("format"), v.get("bits", 8)
                if not isinstance(fmt, str) or fmt not in LEGACY_FORMATS or (
                        fmt == "int" and bits not in WEIGHT_FORMATS["int"].precisions):
                    got = f"format={fmt!r}" + (f" with bits={bits!r}" if fmt == "int" else "")
                    raise ValueError(f"{got} is not allowed: the weight precision is `bits` alone "
                                     f"({WEIGHT_DESCRIPTION}); older records' format int (bits 2..8), fp16, binary "
                                     "or fp32 read as that precision")
                v["bits"] = LEGACY_FORMATS[fmt] or bits
            if v.get("act_bits", 0) is None:
                v["act_bits"] = FLOAT
        return v

    @field_validator("group_act_bits")
    @classmethod
    def _quantized_groups(cls, v):
        float_groups = [g for g, b in v.items() if b == FLOAT]
        if float_groups:
            raise ValueError(f"group_act_bits[{float_groups[0]}]=32: a group's maps are quantized (2..16); "
                             "float maps are act_bits 32 with no group_act_bits")
        return v

    def needs_data(self) -> bool:
        return self.act_bits != FLOAT or self.method == "qat"

    def plan(self, model: nn.Module) -> dict[str, int]:
        """The weight precision of every conv/linear layer, validated against the model's layer names."""
        layers = list(prunable_layers(model))
        unknown = [n for n in self.layer_bits if n not in layers]
        if unknown:
            raise OrchestratorError(f"layer_bits names unknown layer {unknown[0]!r}; layers: {', '.join(layers)}")
        groups = layer_groups(model)
        for key in ("group_bits", "group_act_bits"):
            unknown = [g for g in getattr(self, key) if g not in groups]
            if unknown:
                raise OrchestratorError(f"{key} names group {unknown[0]!r}, which the model does not have; "
                                        f"groups: {', '.join(groups)}")
        if self.group_act_bits and self.act_bits == FLOAT:
            raise OrchestratorError("group_act_bits needs act_bits below 32 (the bits of the other groups)")
        explicit = {n: b for g, b in self.group_bits.items() for n in groups[g]} | self.layer_bits
        ends = self.ends_bits if self.ends_bits is not None and format_of(self.bits).scaled else None
        return {name: explicit.get(name, ends if ends is not None and i in (0, len(layers) - 1) else self.bits)
                for i, name in enumerate(layers)}


def calibrate_(model: nn.Module, data: FinetuneData, images: int) -> None:
    """Run `images` training images through the model with every ActQuant recording its range."""
    split = data.require("train", "activation calibration")
    quants = [m for m in model.modules() if isinstance(m, ActQuant)]
    for q in quants:
        q.calibrating, q.momentum = True, 1.0  # first batch sets max, later ones take the running maximum
    model.to(data.device).eval()
    with torch.no_grad():
        for i, (x, _) in enumerate(first_batches(split, 256, data.normalization, data.device, images)):
            for q in quants:
                q.momentum = 1.0 if i == 0 else 0.1
            model(x)
    for q in quants:
        q.calibrating, q.momentum = False, 0.1


def quantize_(model: nn.Module, config: QuantConfig | dict, data: FinetuneData | None = None) -> nn.Module:
    """Quantize `model` in place (PTQ, or QAT with fake quantization then baked weights); returns it."""
    config = config if isinstance(config, QuantConfig) else QuantConfig.model_validate(config)
    if config.needs_data() and data is None:
        raise OrchestratorError(f"quantization {config.method!r} with these settings needs training data "
                                "(QAT, or activation calibration); none was given")
    finalize_(model)  # masks become plain zeros, which every format keeps
    plan = config.plan(model)
    layers = prunable_layers(model)
    if config.act_bits != FLOAT:
        first = next(iter(layers))
        act = {n: b for g, b in config.group_act_bits.items() for n in layer_groups(model)[g]}
        for name, module in layers.items():
            if name != first:  # the first conv reads the 8-bit image itself
                attach_act_quant_(module, act.get(name, config.act_bits), clip=config.act_scale == "mse")
        set_act_bits_(model)  # the stem's first conv has none
    if config.method == "qat":
        for name, module in layers.items():
            if format_of(plan[name]) is not FP32:
                fake_quantize_weight_(module, plan[name], clip=config.weight_scale == "mse")
        finetune(model, config.finetune, data, "qat")
        for module in layers.values():
            strip_weight_fake_quant_(module)
    elif config.act_bits != FLOAT:
        calibrate_(model, data, config.calibration_images)
    for name, module in layers.items():
        quantize_weight_(module, plan[name], clip=config.weight_scale == "mse")
    return model.eval()


__all__ = ["QuantConfig", "quantize_", "calibrate_"]
