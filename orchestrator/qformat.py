"""Quantized representation: what checkpoints, footprint accounting and export read and write.

It stands apart from `quant/` (PTQ, QAT training): persistence needs the representation, never the
quantizer's training code.

A quantized conv/linear module keeps a float `weight` that holds exactly the representable values
(dequantized), and says how they are stored:
- `weight_format`: "int" (symmetric per-output-channel, k bits), "binary" (sign x per-channel scale) or
  "fp16", the format `format_of` gives its precision;
- `weight_bits`: bits per stored value, the precision (`WeightBits`);
- buffer `weight_scale` (one fp32 per output channel) for "int" and "binary".
Zeros (pruned weights) stay exactly zero in every format, so pruning and quantization compose.
A layer whose input is quantized carries an `act_quant` (`ActQuant`: k bits, calibrated range).
`weight_spec` / `set_weight_spec_` read and write the weight side, so no caller probes attributes.

This module is the one home of precision: `WeightBits` (bits per stored weight: 32 fp32, 16 fp16, 2..8 int,
1 binary; each format declares its own) and `ActBits` (bits per activation: 32 float maps, or 2..16) are the
one encoding of configs, search spaces, the CLI, records and MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import OrchestratorError
from .values import check, one_of


def pack_bits(values: np.ndarray, k: int) -> bytes:
    """Little-endian bit-packing of non-negative integers < 2^k."""
    v = values.astype(np.uint64)
    bits = ((v[:, None] >> np.arange(k, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int, k: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=n * k, bitorder="little").reshape(n, k)
    return (bits.astype(np.uint64) << np.arange(k, dtype=np.uint64)).sum(1).astype(np.int64)


def _pack_int(values: torch.Tensor, bits: int) -> bytes:  # two's-complement k-bit codes
    return pack_bits(values.numpy().astype(np.int64) & ((1 << bits) - 1), bits)


def _unpack_int(data: bytes, n: int, bits: int) -> torch.Tensor:
    u = unpack_bits(data, n, bits)
    return torch.from_numpy(np.where(u >= 1 << (bits - 1), u - (1 << bits), u))


def _pack_sign(values: torch.Tensor, bits: int) -> bytes:  # one bit per value: 1 for +1
    return pack_bits((values.numpy() > 0).astype(np.int64), 1)


def _unpack_sign(data: bytes, n: int, bits: int) -> torch.Tensor:
    return torch.from_numpy(unpack_bits(data, n, 1) * 2 - 1)


def _raw(dtype: torch.dtype):
    """(encode, decode) of values stored as `dtype` (fp32 as is; 16-bit floats through their int16 view)."""
    view = torch.float32 if dtype == torch.float32 else torch.int16

    def encode(values: torch.Tensor, bits: int) -> bytes:
        return values.to(dtype).view(view).numpy().tobytes()

    def decode(data: bytes, n: int, bits: int) -> torch.Tensor:
        raw = torch.from_numpy(np.frombuffer(data, np.float32 if view == torch.float32 else np.int16, count=n).copy())
        return raw.view(dtype).float()
    return encode, decode


def _float(dtype):
    def quantize(w: torch.Tensor, bits: int, clip: bool = False):
        return None, None, w.to(dtype).to(w.dtype)
    return quantize


def _binary(w: torch.Tensor, bits: int, clip: bool = False):  # mean |w|: already the least-squares scale
    flat = w.detach().reshape(w.shape[0], -1).float()
    nz = (flat != 0).float()
    scale = (flat.abs().sum(1) / nz.sum(1).clamp(min=1)).clamp(min=1e-12)  # mean |w| of the kept weights
    return torch.sign(flat), scale


CLIP_FRACTIONS = torch.linspace(0.2, 1.0, 33)  # candidate clipping ranges, fractions of max |w|


def _int(w: torch.Tensor, bits: int, clip: bool = False):
    """Symmetric per-output-channel codes (-2^(k-1) unused). The scale maps max |w| to the top code, or with
    `clip` the range (a fraction of max |w|) of least squared error: at 2-4 bits, rounding a few large weights
    down costs far less than the coarse grid max |w| leaves for all the others (at 2 bits, max scaling zeroes
    every weight under max/2)."""
    flat = w.detach().reshape(w.shape[0], -1).float()
    hi = 2 ** (bits - 1) - 1  # the top code; codes are symmetric in [-hi, hi]
    top = flat.abs().amax(1).clamp(min=1e-12)
    scale = top / hi
    if clip:  # one candidate at a time: memory of one weight copy, whatever the layer
        best = torch.full_like(top, math.inf)
        for f in CLIP_FRACTIONS.tolist():
            s = f * top / hi
            err = ((torch.clamp(torch.round(flat / s[:, None]), -hi, hi) * s[:, None] - flat) ** 2).sum(1)
            better = err < best
            best, scale = torch.where(better, err, best), torch.where(better, s, scale)
    return torch.clamp(torch.round(flat / scale[:, None]), -hi, hi), scale


@dataclass(frozen=True)
class WeightFormat:
    """One storage format of quantized weights: how values are rounded, at how many bits, how they are stored.

    Scaled formats store integer codes x one fp32 scale per output channel (`weight_scale`); float
    formats store the values in `dtype`. Each format owns its rounding, its bit rule and its file encoding
    (`encode`, `decode`, `nbytes`). Adding a format is adding one entry to `WEIGHT_FORMATS`.
    """

    name: str
    round: Callable  # (weight, bits) -> (codes, per-channel scale) for scaled formats; a float quantizer otherwise
    encode: Callable  # (codes or float values, bits) -> the bytes of an export's value stream
    decode: Callable  # (bytes, count, bits) -> the values `encode` wrote
    precisions: tuple[int, ...]  # the weight precisions (bits per value) quantizing to it gives
    scaled: bool = True
    dtype: str | None = None  # torch dtype name of stored float values: also the format's name in an export file

    @property
    def stored(self) -> str:
        """The format's name in an export header (kept from the first file version: float formats by dtype)."""
        return self.dtype or self.name

    def width(self, bits: int) -> int:
        """Bits per stored value: a float format's dtype width, binary's 1, int's `bits` (as recorded)."""
        if self.dtype:
            return torch.finfo(getattr(torch, self.dtype)).bits
        return self.precisions[0] if len(self.precisions) == 1 else bits

    def nbytes(self, bits: int, count: int) -> int:
        """Length of `encode` for `count` values (bits as recorded, not validated: a header is checked by its use)."""
        return (count * self.width(bits) + 7) // 8


FP32 = WeightFormat("fp32", _float(torch.float32), *_raw(torch.float32), (32,), scaled=False, dtype="float32")
WEIGHT_FORMATS = {f.name: f for f in (  # the quantized formats, widest first (fp32: weights left as they are)
    WeightFormat("fp16", _float(torch.float16), *_raw(torch.float16), (16,), scaled=False, dtype="float16"),
    WeightFormat("int", _int, _pack_int, _unpack_int, tuple(range(8, 1, -1))),
    WeightFormat("binary", _binary, _pack_sign, _unpack_sign, (1,)),
    # read only: files written when bf16 was a weight format load and export as they were; no precision makes it
    WeightFormat("bf16", _float(torch.bfloat16), *_raw(torch.bfloat16), (), scaled=False, dtype="bfloat16"),
)}
STORED = {f.stored: f for f in (*WEIGHT_FORMATS.values(), FP32)}  # export header name -> format (fp32: unquantized)
_BY_BITS = {b: f for f in (FP32, *WEIGHT_FORMATS.values()) for b in f.precisions}
WEIGHT_BITS = tuple(_BY_BITS)  # every weight precision: 32, 16, 8..2, 1


def _described(f: WeightFormat) -> str:
    p = f.precisions
    return f"{p[-1]}..{p[0]} ({f.name})" if len(p) > 1 else f"{p[0]} ({f.name})"


WEIGHT_DESCRIPTION = ", ".join(_described(f) for f in (FP32, *WEIGHT_FORMATS.values()) if f.precisions)
WeightBits = one_of(WEIGHT_BITS, "weight bits", WEIGHT_DESCRIPTION)
FLOAT = 32  # float maps, in the one encoding of activation bits
ACT_BITS = (FLOAT, *range(16, 1, -1))
ActBits = one_of(ACT_BITS, "activation bits", "32 (float) or 2..16")


def stored_format(module: nn.Module | None, t: torch.Tensor) -> WeightFormat:
    """How an export stores tensor `t` (of `module` when it is a layer's weight): its weight format, else its
    dtype's float format, else fp32."""
    name = (weight_spec(module) or (None,))[0] if module is not None else None
    if name in WEIGHT_FORMATS:
        return WEIGHT_FORMATS[name]
    return STORED.get(str(t.dtype).removeprefix("torch."), FP32)


def weight_format(fmt: str) -> WeightFormat:
    """A quantized format by its name (as a checkpoint records it)."""
    if fmt not in WEIGHT_FORMATS:
        raise OrchestratorError(f"unknown weight format {fmt!r}; allowed: {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[fmt]


def format_of(bits) -> WeightFormat:
    """The format that stores weight precision `bits` (validated as `WeightBits`; 32: fp32, weights as they are)."""
    return _BY_BITS[check(WeightBits, bits, "weight bits")]


def quantize_tensor(w: torch.Tensor, bits: int, clip: bool = False):
    """(integer codes or None, per-channel scale or None, dequantized float tensor); `clip`: least-squares ranges."""
    return rounded(w, format_of(bits), bits, clip)


def rounded(w: torch.Tensor, handler: WeightFormat, bits: int | None, clip: bool = False):
    """`quantize_tensor` with the format and bits already checked: what a QAT forward pass calls, every step."""
    if not handler.scaled:
        return handler.round(w, bits)
    codes, scale = handler.round(w, bits, clip)
    deq = (codes * scale[:, None]).reshape(w.shape).to(w.dtype)
    return codes.reshape(w.shape).to(torch.int32), scale, deq


@torch.no_grad()
def quantize_weight_(module: nn.Module, bits: int, clip: bool = False) -> nn.Module:
    """Round `module.weight` to precision `bits` in place and record how it is stored (32: left as it is)."""
    fmt = format_of(bits)
    if fmt is FP32:
        return module
    target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
    _, scale, deq = rounded(module.weight, fmt, bits, clip)
    target.copy_(deq)
    module.weight_format, module.weight_bits = fmt.name, bits
    if scale is not None:  # registered, or replaced when it is already a buffer
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
    if weight_format(fmt).scaled:
        module.register_buffer("weight_scale", scale if scale is not None else torch.empty(module.weight.shape[0]))


ACT_CLIP_FRACTIONS = torch.linspace(0.1, 1.0, 28)  # candidate activation ranges, fractions of the batch's max
ACT_CLIP_SAMPLE = 16384  # about this many values of each batch (11k-33k: a stride, odd) choose the range


def mse_range(x: torch.Tensor, top: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """The range (a fraction of `top`, the batch's max |x|) whose k-bit grid gives the least squared error on a
    strided sample of `x`: ReLU maps have long tails, and at 4 bits the max range spends most levels on a few
    outliers (Banner et al. 2019, ACIQ)."""
    flat = x.detach().reshape(-1)
    stride = max(1, flat.numel() // ACT_CLIP_SAMPLE) | 1  # odd: the sample is not aligned with rows or channels
    sample = flat[::stride].float()[:, None]
    levels = 2.0 ** (bits - 1) - 1 if signed else 2.0 ** bits - 1
    ranges = ACT_CLIP_FRACTIONS.to(x.device) * top
    scale = ranges / levels
    q = torch.clamp(torch.round(sample / scale), -levels if signed else 0.0, levels) * scale
    return ranges[((q - sample) ** 2).sum(0).argmin()]


class ActQuant(nn.Module):
    """k-bit fake quantization of a layer's input; `max` is calibrated, `signed` detected. With `clip`, the range
    tracked is each batch's least-squares range (`mse_range`) rather than its max |x|."""

    fused = True  # eager passes (QAT, calibration, evaluation) use `_RoundSTE`; torch.export traces the expression
    # below (False: the expression everywhere; benchmarks compare)

    def __init__(self, bits: int, momentum: float = 0.1, clip: bool = False):
        super().__init__()
        self.bits, self.momentum, self.clip = bits, momentum, clip
        self.calibrating = False
        self.register_buffer("max", torch.zeros(()))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta:  # shape tracing (footprint): values do not matter
            return x
        if self.training or self.calibrating:
            with torch.no_grad():
                lo_x, hi_x = torch.aminmax(x.detach())  # one pass: the range and the sign
                m = torch.maximum(-lo_x, hi_x).float()
                self.signed |= bool(lo_x < 0)
                if self.clip and m > 0:
                    m = mse_range(x, m, self.bits, bool(self.signed))
                self.max.copy_(m if self.max == 0 else (1 - self.momentum) * self.max + self.momentum * m)
        if self.fused and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            if not self.max > 0:  # an uncalibrated quantizer passes x through
                return x
            levels = 2.0 ** (self.bits - 1) - 1 if self.signed else 2.0 ** self.bits - 1  # the same values in 7
            return _RoundSTE.apply(x, self.max / levels, -levels if self.signed else 0.0, levels)  # passes, not 11
        # tensor ops only, no branch on a buffer's value: torch.export (MLflow's pt2 models, deploy) traces this
        levels = torch.where(self.signed, 2.0 ** (self.bits - 1) - 1, 2.0 ** self.bits - 1)
        lo = torch.where(self.signed, -levels, torch.zeros_like(levels))
        scale = self.max / levels
        q = torch.clamp(torch.round(x / scale), lo, levels) * scale
        q = torch.where(self.max > 0, q, x)  # an uncalibrated quantizer passes x through
        return x + (q - x).detach()


class _RoundSTE(torch.autograd.Function):
    """x + (round-to-grid(x) - x) with the gradient of the identity, computed in place on one buffer: bit for
    bit what `ActQuant`'s traceable expression gives (a + b == b + a in IEEE), with one temporary instead of nine."""

    @staticmethod
    def forward(ctx, x, scale, lo: float, hi: float):
        q = torch.div(x, scale).round_().clamp_(lo, hi).mul_(scale)
        return q.sub_(x).add_(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


def _pre_hook(module, args):
    return (module.act_quant(args[0]),) + tuple(args[1:])


def act_quant_of(module: nn.Module) -> ActQuant | None:
    """The quantizer of `module`'s input, None when its input stays float (the one test of that)."""
    return getattr(module, "act_quant", None)


def set_act_bits_(model: nn.Module) -> None:
    """`model.act_bits`: the widest quantizer any layer carries (the footprint's default width; a model whose
    layers differ is still accounted map by map). Left unset when no layer quantizes its input."""
    bits = [q.bits for m in model.modules() if (q := act_quant_of(m)) is not None]
    if bits:
        model.act_bits = max(bits)


def attach_act_quant_(module: nn.Module, bits: int, clip: bool = False) -> ActQuant:
    module.act_quant = ActQuant(bits, clip=clip)
    module._act_quant_hook = module.register_forward_pre_hook(_pre_hook)
    return module.act_quant


def detach_act_quant_(module: nn.Module) -> None:
    """Undo `attach_act_quant_`: `module`'s input stays float again (nothing when it has no quantizer)."""
    if act_quant_of(module) is not None:
        module._act_quant_hook.remove()
        del module._act_quant_hook, module.act_quant
