"""taylor_filter: Molchanov et al. 2019's first-order Taylor importance of channels.

The loss change from removing a channel is estimated from the gradient of its BN parameters:
(gamma dL/dgamma + beta dL/dbeta)^2, accumulated per batch over a few calibration batches. Unlike
L1 norms, it sees the data; like them, it feeds the same per-group selection and surgery.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..loader import first_batches
from ..finetune import FinetuneData
from .registry import register
from .channels import Cached
from .structured import FilterConfig, kinds, prune_filters
from .surgery import channel_groups


class TaylorFilter(FilterConfig):
    method: Literal["taylor_filter"] = "taylor_filter"
    images: int = Field(512, ge=1)  # calibration images from the training split
    batch_size: int = Field(64, ge=1)  # images per gradient evaluation

    def needs_data(self) -> bool:
        return True


def taylor_scores(model: nn.Module, data: FinetuneData, images: int, batch_size: int, group_kinds) -> dict:
    """{group: importance per channel} from BN-parameter gradients on `images` training images."""
    train = data.require("train", "taylor_filter")
    bns = {name: [model.get_submodule(b) for b in g.bns] for name, g in channel_groups(model, group_kinds).items()}
    scores = {name: torch.zeros(g.size(model), device=data.device) for name, g in channel_groups(model, group_kinds).items()}
    was_training = model.training
    model.to(data.device).eval()  # BN in eval mode: the statistics the deployed net uses
    for x, y in first_batches(train, batch_size, data.normalization, data.device, images):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for name, modules in bns.items():
            contrib = sum(m.weight * m.weight.grad + m.bias * m.bias.grad for m in modules)
            scores[name] += contrib.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: s.cpu() for name, s in scores.items()}


@register(TaylorFilter)
def taylor_filter(model: nn.Module, config: TaylorFilter, data: FinetuneData | None) -> nn.Module:
    importance = Cached(lambda m: taylor_scores(m, data, config.images, config.batch_size, kinds(config.groups)),
                        "taylor")
    return prune_filters(model, config, data, importance)
