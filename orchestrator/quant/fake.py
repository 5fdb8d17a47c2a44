"""Fake quantization for quantization-aware training, with the straight-through estimator (STE).

Weights: a `torch.nn.utils.parametrize` parametrization makes `module.weight` the quantized
value of a float latent weight; the forward uses the rounded value, the backward passes the
gradient straight through to the latent weight (Bengio et al. 2013). Zeros of a pruned weight
are held by a fixed mask, so QAT never revives pruned weights.

Activations: an `ActQuant` child on each conv/linear quantizes the layer's input (the feature map
that inference stores) to k bits over [0, max] (or [-max, max] when it has negatives), with max
an exponential moving average of each batch's max |x| (with `act_scale: mse`, of its least-squares range)
while training or calibrating, frozen otherwise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..qformat import ActQuant, attach_act_quant_, format_of, rounded  # noqa: F401


class WeightFakeQuant(nn.Module):
    def __init__(self, bits: int, mask: torch.Tensor | None = None, clip: bool = False):
        super().__init__()
        self.handler = format_of(bits)  # checked once here, never in the forward pass
        self.bits, self.clip = bits, clip
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        _, _, q = rounded(w.detach(), self.handler, self.bits, self.clip)
        if self.mask is not None:
            q = q * self.mask  # binary codes are +-1: keep pruned positions at zero
        return w + (q - w).detach()  # STE: value q, gradient of the identity


def fake_quantize_weight_(module: nn.Module, bits: int, clip: bool = False) -> None:
    w = module.weight.detach()
    mask = (w != 0).to(w.dtype) if bool((w == 0).any()) else None
    parametrize.register_parametrization(module, "weight", WeightFakeQuant(bits, mask, clip))


def strip_weight_fake_quant_(module: nn.Module) -> None:
    """Bake the quantized value into a plain `weight` (the latent float weight is dropped)."""
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
