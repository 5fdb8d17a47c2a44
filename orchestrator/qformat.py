"""Quantized representation: what checkpoints, footprint accounting and export read and write.

It stands apart from `quant/` (PTQ, QAT training): persistence needs the representation, never the
quantizer's training code.

A quantized conv/linear module keeps a float `weight` that holds exactly the representable values
(dequantized), and says how they are stored:
- `weight_format`: "int" (symmetric per-output-channel, k bits), "binary" (sign x per-channel scale),
  "fp16" or "bf16";
- `weight_bits`: bits per stored value;
- buffer `weight_scale` (one fp32 per output channel) for "int" and "binary".
Zeros (pruned weights) stay exactly zero in every format, so pruning and quantization compose.
A layer whose input is quantized carries an `act_quant` (`ActQuant`: k bits, calibrated range).
`weight_spec` / `set_weight_spec_` read and write the weight side, so no caller probes attributes.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import OrchestratorError

FORMATS = ("int", "binary", "fp16", "bf16")
SCALED_FORMATS = ("int", "binary")  # stored as integer codes x a per-channel `weight_scale`
FLOAT_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # float formats -> torch dtype names


def int_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def quantize_tensor(w: torch.Tensor, fmt: str, bits: int | None = None):
    """(integer codes or None, per-channel scale or None, dequantized float tensor)."""
    if fmt == "fp16":
        return None, None, w.to(torch.float16).to(w.dtype)
    if fmt == "bf16":
        return None, None, w.to(torch.bfloat16).to(w.dtype)
    flat = w.detach().reshape(w.shape[0], -1).float()
    if fmt == "binary":
        nz = (flat != 0).float()
        scale = (flat.abs().sum(1) / nz.sum(1).clamp(min=1)).clamp(min=1e-12)  # mean |w| of the kept weights
        codes = torch.sign(flat)
    elif fmt == "int":
        _, hi = int_range(bits)
        scale = (flat.abs().amax(1) / hi).clamp(min=1e-12)
        codes = torch.clamp(torch.round(flat / scale[:, None]), -hi, hi)  # symmetric: -2^(k-1) unused
    else:
        raise OrchestratorError(f"unknown weight format {fmt!r}; allowed: {', '.join(FORMATS)}")
    deq = (codes * scale[:, None]).reshape(w.shape).to(w.dtype)
    return codes.reshape(w.shape).to(torch.int32), scale, deq


def check_bits(fmt: str, bits) -> int:
    if fmt == "int":
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise OrchestratorError(f"weight bits={bits!r} not supported for 'int'; allowed: integers 2..16")
        return bits
    if fmt not in FORMATS:
        raise OrchestratorError(f"unknown weight format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return {"binary": 1, "fp16": 16, "bf16": 16}[fmt]


@torch.no_grad()
def quantize_weight_(module: nn.Module, fmt: str, bits: int | None = None) -> nn.Module:
    """Round `module.weight` to `fmt` in place and record how it is stored."""
    bits = check_bits(fmt, bits)
    target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
    _, scale, deq = quantize_tensor(module.weight, fmt, bits)
    target.copy_(deq)
    module.weight_format, module.weight_bits = fmt, bits
    if scale is not None:
        if "weight_scale" in module._buffers:
            module.weight_scale = scale
        else:
            module.register_buffer("weight_scale", scale)
    return module


def weight_codes(module: nn.Module) -> torch.Tensor:
    """Integer codes of a quantized module's weight (exact: the weight holds code x scale)."""
    scale = module.weight_scale.view(-1, *([1] * (module.weight.dim() - 1)))
    return torch.round(module.weight.detach().float() / scale).to(torch.int32)


def weight_spec(module: nn.Module) -> tuple[str, int] | None:
    """(format, bits) of a quantized weight, None for a float one."""
    fmt = getattr(module, "weight_format", None)
    return None if fmt is None else (fmt, module.weight_bits)


def set_weight_spec_(module: nn.Module, fmt: str, bits: int, scale: torch.Tensor | None = None) -> None:
    """Mark `module`'s weight as stored in `fmt` at `bits` (with its per-channel `scale` when scaled)."""
    module.weight_format, module.weight_bits = fmt, bits
    if fmt in SCALED_FORMATS:
        module.register_buffer("weight_scale", scale if scale is not None else torch.empty(module.weight.shape[0]))


class ActQuant(nn.Module):
    """k-bit fake quantization of a layer's input; `max` is calibrated, `signed` detected."""

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        self.bits, self.momentum = bits, momentum
        self.calibrating = False
        self.register_buffer("max", torch.zeros(()))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta:  # shape tracing (footprint): values do not matter
            return x
        if self.training or self.calibrating:
            with torch.no_grad():
                m = x.detach().abs().amax().float()
                self.max.copy_(m if self.max == 0 else (1 - self.momentum) * self.max + self.momentum * m)
                self.signed |= bool((x < 0).any())
        # tensor ops only, no branch on a buffer's value: torch.export (MLflow's pt2 models) traces this
        levels = torch.where(self.signed, 2.0 ** (self.bits - 1) - 1, 2.0 ** self.bits - 1)
        lo = torch.where(self.signed, -levels, torch.zeros_like(levels))
        scale = self.max / levels
        q = torch.clamp(torch.round(x / scale), lo, levels) * scale
        q = torch.where(self.max > 0, q, x)  # an uncalibrated quantizer passes x through
        return x + (q - x).detach()


def _pre_hook(module, args):
    return (module.act_quant(args[0]),) + tuple(args[1:])


def attach_act_quant_(module: nn.Module, bits: int) -> ActQuant:
    module.act_quant = ActQuant(bits)
    module._act_quant_hook = module.register_forward_pre_hook(_pre_hook)
    return module.act_quant
