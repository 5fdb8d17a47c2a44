"""Fake quantization for quantization-aware training, with the straight-through estimator (STE).

Weights: a `torch.nn.utils.parametrize` parametrization makes `module.weight` the quantized
value of a float latent weight; the forward uses the rounded value, the backward passes the
gradient straight through to the latent weight (Bengio et al. 2013). Zeros of a pruned weight
are held by a fixed mask, so QAT never revives pruned weights.

Activations: an `ActQuant` child on each conv/linear quantizes the layer's input (the feature map
that inference stores) to k bits over [0, max] (or [-max, max] when it has negatives), with max
an exponential moving average of the observed |x| while training or calibrating, frozen otherwise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..quantize import quantize_tensor


class WeightFakeQuant(nn.Module):
    def __init__(self, fmt: str, bits: int, mask: torch.Tensor | None = None):
        super().__init__()
        self.fmt, self.bits = fmt, bits
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        _, _, q = quantize_tensor(w.detach(), self.fmt, self.bits)
        if self.mask is not None:
            q = q * self.mask  # binary codes are +-1: keep pruned positions at zero
        return w + (q - w).detach()  # STE: value q, gradient of the identity


def fake_quantize_weight_(module: nn.Module, fmt: str, bits: int) -> None:
    w = module.weight.detach()
    mask = (w != 0).to(w.dtype) if bool((w == 0).any()) else None
    parametrize.register_parametrization(module, "weight", WeightFakeQuant(fmt, bits, mask))


def strip_weight_fake_quant_(module: nn.Module) -> None:
    """Bake the quantized value into a plain `weight` (the latent float weight is dropped)."""
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


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
