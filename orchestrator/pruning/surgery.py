"""Structured pruning by channel surgery: remove channels and get a smaller dense model.

A *channel group* is a set of channels that must go together: the output channels of one conv
(the producer), the BN after it, any depthwise conv (and its BN) running on them, and the matching
input channels of the layers that read them (the consumers). Groups are read off the width spec,
so removal is: new widths -> `build_model` -> copy the kept slices. No masks, no `weight_orig`: the
result saves and reloads through the checkpoint format.

Groups per family (what Li et al. 2017 and ThiNet pruned):
- resnet: the inner channels of each block (conv1 -> bn1 -> conv2); the residual stream is kept;
- vgg: the output channels of every conv (-> bn -> next conv or classifier);
- mobilenetv2: the hidden channels of each expanding block (expand conv -> bn -> depthwise -> bn -> project).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import OrchestratorError
from ..models import build_model


@dataclass
class Group:
    producer: str  # conv whose output channels are removed
    consumers: list[str]  # convs/linears whose input channels are removed
    bns: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    path: tuple = ()  # where this group's width lives in the width spec


def channel_groups(model: nn.Module) -> dict[str, Group]:
    """Removable channel groups of a zoo model, keyed by the producer's name."""
    arch, w = getattr(model, "arch", ""), getattr(model, "widths", None)
    groups: dict[str, Group] = {}
    if arch.startswith("resnet"):
        for s, stage in enumerate(w["blocks"]):
            for i in range(len(stage)):
                p = f"layer{s + 1}.{i}"
                groups[f"{p}.conv1"] = Group(f"{p}.conv1", [f"{p}.conv2"], [f"{p}.bn1"], path=("blocks", s, i))
    elif arch.startswith("vgg"):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        flat = [(s, j) for s, stage in enumerate(w["stages"]) for j in range(len(stage))]
        for k, name in enumerate(convs):
            idx = int(name.split(".")[1])
            consumer = convs[k + 1] if k + 1 < len(convs) else "classifier"
            groups[name] = Group(name, [consumer], [f"features.{idx + 1}"], path=("stages",) + flat[k])
    elif arch == "mobilenetv2":
        for j, b in enumerate(w["blocks"]):
            if b["expand"]:
                p = f"blocks.{j}.conv"
                groups[f"{p}.0"] = Group(f"{p}.0", [f"{p}.6"], [f"{p}.1", f"{p}.4"], [f"{p}.3"],
                                         path=("blocks", j, "hidden"))
    else:
        raise OrchestratorError(f"no channel groups known for arch {arch!r}; allowed: resnet*, vgg*, mobilenetv2")
    return groups


def filter_l1(model: nn.Module, group: Group) -> torch.Tensor:
    """Li et al. 2017: L1 norm of each output filter of the producer conv."""
    return model.get_submodule(group.producer).weight.detach().abs().flatten(1).sum(1)


def _set(widths: dict, path: tuple, value: int) -> None:
    target = widths
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@torch.no_grad()
def remove_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model keeping channels `keep[producer]` (sorted indices) of each named group."""
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
        idx = torch.as_tensor(idx, dtype=torch.long).unique(sorted=True)
        size = model.get_submodule(g.producer).out_channels
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= size:
            raise OrchestratorError(f"group {name!r}: kept channels must be 1..{size} indices in [0, {size - 1}]")
        _set(widths, g.path, len(idx))
        for m in [g.producer, *g.bns, *g.depthwise]:
            out_idx[m] = idx
        for m in g.consumers:
            in_idx[m] = idx
    new = build_model(model.arch, model.num_classes, widths)
    old_modules = dict(model.named_modules())
    for name, module in new.named_modules():
        if not list(module.children()) and name in old_modules:
            _copy_slices(old_modules[name], module, out_idx.get(name), in_idx.get(name))
    return new.train(model.training)


def _copy_slices(old: nn.Module, new: nn.Module, out_idx, in_idx) -> None:
    for key, value in list(old.named_parameters(recurse=False)) + list(old.named_buffers(recurse=False)):
        t = value.detach()
        if out_idx is not None and t.dim() >= 1:
            t = t.index_select(0, out_idx)
        if in_idx is not None and t.dim() >= 2 and not (isinstance(old, nn.Conv2d) and old.groups > 1):
            t = t.index_select(1, in_idx)
        getattr(new, key).copy_(t)
