"""Structured pruning by channel surgery: remove channels and get a smaller dense model.

The channels that must go together are a *channel group* (`models.groups`: each model family declares
its own, read off the width spec), so removal is: new widths -> `build_model` -> copy the kept slices. No
masks, no `weight_orig`: the result saves and reloads through the checkpoint format. Kind "internal" is
what Li et al. 2017 and ThiNet pruned, kind "stream" the residual stream of option-B ResNets.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import OrchestratorError
from ..models import build_model
from ..models.groups import ChannelGroup


Group = ChannelGroup  # the pruning code's name for it


def channel_groups(model: nn.Module, kinds: tuple[str, ...] = ("internal", "stream")) -> dict[str, Group]:
    """Removable channel groups of a zoo model by name (block groups are named after their first conv);
    the model family declares them (`models.groups`)."""
    if not hasattr(model, "channel_groups"):
        raise OrchestratorError(f"no channel groups known for {type(model).__name__} "
                                f"(arch {getattr(model, 'arch', '?')!r}): build it from the model zoo")
    return {n: g for n, g in model.channel_groups().items() if g.kind in kinds}


def filter_l1(model: nn.Module, group: Group) -> torch.Tensor:
    """Li et al. 2017: L1 norm of each output filter, summed over the group's producers."""
    return sum(model.get_submodule(p).weight.detach().abs().flatten(1).sum(1) for p in group.producers)


def _set(widths: dict, path: tuple, value: int) -> None:
    target = widths
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@torch.no_grad()
def zero_channels_(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """Zero every channel not in `keep` (producer filters, BN scale and shift, depthwise filters) in place.

    The model then computes exactly what `remove_channels(model, keep)` computes.
    """
    groups = channel_groups(model)
    for name, idx in keep.items():
        g = groups[name]
        drop = torch.ones(g.size(model), dtype=torch.bool)
        drop[torch.as_tensor(idx, dtype=torch.long)] = False
        for m in [*g.producers, *g.bns, *g.depthwise]:
            module = model.get_submodule(m)
            module.weight[drop.to(module.weight.device)] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[drop.to(module.bias.device)] = 0
    return model


@torch.no_grad()
def remove_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model keeping channels `keep[group]` (indices) of each named group."""
    if any(k.endswith("_orig") for k in model.state_dict()):
        raise OrchestratorError("model carries pruning masks: call finalize_(model) before removing channels")
    groups = channel_groups(model)
    widths = copy.deepcopy(model.widths)
    out_idx: dict[str, torch.Tensor] = {}  # module -> kept output channels (conv, BN, depthwise)
    in_idx: dict[str, torch.Tensor] = {}  # module -> kept input channels
    for name, idx in keep.items():
        if name not in groups:
            raise OrchestratorError(f"unknown channel group {name!r}; allowed: {', '.join(groups)}")
        g = groups[name]
        idx = torch.as_tensor(idx, dtype=torch.long).cpu().unique(sorted=True)
        size = g.size(model)
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= size:
            raise OrchestratorError(f"group {name!r}: kept channels must be 1..{size} indices in [0, {size - 1}]")
        _set(widths, g.path, len(idx))
        for m in [*g.producers, *g.bns, *g.depthwise]:
            out_idx[m] = idx
        for m in g.consumers:
            in_idx[m] = idx
    device = next(model.parameters()).device
    new = build_model(model.arch, model.num_classes, widths).to(device)
    old_modules = dict(model.named_modules())
    for name, module in new.named_modules():
        if not list(module.children()) and name in old_modules:
            _copy_slices(old_modules[name], module, out_idx.get(name), in_idx.get(name))
    return new.train(model.training)


def _copy_slices(old: nn.Module, new: nn.Module, out_idx, in_idx) -> None:
    for key, value in list(old.named_parameters(recurse=False)) + list(old.named_buffers(recurse=False)):
        t = value.detach()
        if out_idx is not None and t.dim() >= 1:
            t = t.index_select(0, out_idx.to(t.device))
        if in_idx is not None and t.dim() >= 2 and not (isinstance(old, nn.Conv2d) and old.groups > 1):
            t = t.index_select(1, in_idx.to(t.device))
        getattr(new, key).copy_(t)
