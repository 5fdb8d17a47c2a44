"""ThiNet (Luo et al. 2017): choose a layer's channels by how well the next layer's output survives.

For a channel group, the consumer layer's output at a sampled (image, output channel, location) is
the sum over input channels c of a contribution x_c (the consumer's kernel applied to channel c's
patch). Removing the set T of channels leaves the error (sum over c in T of x_c)^2. ThiNet grows T
greedily, each time adding the channel that keeps this error smallest, removes T from the producer
(and its BN and consumers), then refits the kept channels' consumer weights by least squares
(one scale per channel). Groups are pruned one at a time, so each one sees the already-pruned net.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..loader import normalize
from .channels import group_ratios
from ..finetune import FinetuneData, finetune
from .registry import register
from .structured import ChannelRatios
from .surgery import Group, channel_groups, remove_channels


class ThiNet(ChannelRatios):
    method: Literal["thinet"] = "thinet"
    images: int = Field(256, ge=1)  # calibration images drawn from the training split
    locations: int = Field(10, ge=1)  # sampled (output channel, position) pairs per image
    refit: bool = True  # least-squares rescaling of the kept channels
    seed: int = Field(0, ge=0)

    def needs_data(self) -> bool:
        return True


def greedy_removal(contrib: torch.Tensor, n_remove: int) -> list[int]:
    """Channels whose summed contribution stays closest to zero: contrib is (samples, channels)."""
    removed: list[int] = []
    total = torch.zeros(contrib.shape[0], dtype=contrib.dtype)
    available = torch.ones(contrib.shape[1], dtype=torch.bool)
    for _ in range(n_remove):
        err = ((total[:, None] + contrib) ** 2).sum(0)
        err[~available] = torch.inf
        c = int(err.argmin())
        removed.append(c)
        available[c] = False
        total += contrib[:, c]
    return removed


def least_squares_scales(contrib: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Scales w minimizing ||y - contrib[:, kept] @ w||^2, y being the unpruned output."""
    y = contrib.sum(1, keepdim=True)
    a = contrib[:, kept].double()
    return torch.linalg.lstsq(a, y.double()).solution.squeeze(1).to(contrib.dtype)


@torch.no_grad()
def contributions(model: nn.Module, group: Group, images: torch.Tensor, locations: int,
                  generator: torch.Generator) -> torch.Tensor:
    """(samples, channels) contributions of each input channel of the group's consumer."""
    consumer = model.get_submodule(group.consumers[0])
    captured = []
    handle = consumer.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach()))
    try:
        model(images)
    finally:
        handle.remove()
    x = captured[0]
    w = consumer.weight.detach()
    if isinstance(consumer, nn.Linear):
        x, w = x[:, :, None, None], w[:, :, None, None]
        patches = x.flatten(2)[:, :, None, :]  # (N, C, 1, 1)
    else:
        kh, kw = consumer.kernel_size
        patches = F.unfold(x, consumer.kernel_size, consumer.dilation, consumer.padding, consumer.stride)
        patches = patches.view(x.shape[0], x.shape[1], kh * kw, -1)  # (N, C, k, L)
    n, c, k, positions = patches.shape
    s = n * locations
    img = torch.arange(n).repeat_interleave(locations)
    pos = torch.randint(positions, (s,), generator=generator)
    out = torch.randint(w.shape[0], (s,), generator=generator)
    p = patches[img, :, :, pos]  # (S, C, k)
    return (p * w[out].flatten(2)).sum(-1)  # (S, C)


@register(ThiNet)
def thinet(model: nn.Module, config: ThiNet, data: FinetuneData | None) -> nn.Module:
    train = data.require("train", config.method)
    gen = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(train), generator=gen)[:config.images]
    images = normalize(train.images[pick].to(data.device), data.normalization["mean"], data.normalization["std"])
    groups = channel_groups(model, ("internal",))
    ratios = group_ratios(model, groups, config.ratio, config.stage_ratios, config.skip, config.ratios)
    model = model.to(data.device).eval()
    for name in groups:
        if not ratios[name]:
            continue
        g = channel_groups(model, ("internal",))[name]
        size = g.size(model)
        n_remove = min(size - 1, round(ratios[name] * size))
        if n_remove <= 0:
            continue
        contrib = contributions(model, g, images, config.locations, gen).float().cpu()
        removed = set(greedy_removal(contrib, n_remove))
        kept = torch.tensor([c for c in range(size) if c not in removed])
        scales = least_squares_scales(contrib, kept) if config.refit else None
        model = remove_channels(model, {name: kept}).eval()
        if scales is not None:
            consumer = model.get_submodule(g.consumers[0])
            shape = (1, -1) + (1,) * (consumer.weight.dim() - 2)
            with torch.no_grad():
                consumer.weight.mul_(scales.to(consumer.weight.device).view(shape))
    finetune(model, config.finetune, data, "finetune")
    return model
