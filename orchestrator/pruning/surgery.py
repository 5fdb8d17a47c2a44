"""Structured pruning by channel surgery: remove channels and get a smaller dense model.

A *channel group* is a set of channels that must go together: the output channels of its
producer convs, the BNs after them, any depthwise conv (and its BN) running on them, and the
matching input channels of the layers that read them (the consumers). Groups are read off the
width spec, so removal is: new widths -> `build_model` -> copy the kept slices. No masks, no
`weight_orig`: the result saves and reloads through the checkpoint format.

Groups per family (kind "internal" is what Li et al. 2017 and ThiNet pruned):
- resnet: the inner channels of each block (conv1 -> bn1 -> conv2), kind "internal";
  option B also the residual stream of each stage (stem or shortcut conv and every block's conv2
  write it; every block's conv1, the next shortcut and the classifier read it), kind "stream".
  Option A's zero-padding shortcut ties stream channels to fixed positions, so its stream stays;
- vgg: the output channels of every conv (-> bn -> next conv or classifier);
- mobilenetv2: the hidden channels of each expanding block (expand conv -> bn -> depthwise -> bn ->
  project). Its residual stream is left whole.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..errors import OrchestratorError
from ..models import build_model


@dataclass
class Group:
    name: str
    producers: list[str]  # convs whose output channels are removed
    consumers: list[str]  # convs/linears whose input channels are removed
    bns: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    path: tuple = ()  # where this group's width lives in the width spec
    kind: Literal["internal", "stream"] = "internal"

    def size(self, model: nn.Module) -> int:
        return model.get_submodule(self.producers[0]).out_channels


def _resnet_groups(model: nn.Module, w: dict) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    nblocks = len(w["blocks"][0])
    for s in range(len(w["blocks"])):
        for i in range(nblocks):
            p = f"layer{s + 1}.{i}"
            groups[f"{p}.conv1"] = Group(f"{p}.conv1", [f"{p}.conv1"], [f"{p}.conv2"], [f"{p}.bn1"],
                                         path=("blocks", s, i))
    if w.get("shortcut") != "B":
        return groups
    modules = dict(model.named_modules())
    for s in range(len(w["stages"])):
        producers, bns = ([], []) if s else (["conv1"], ["bn1"])
        consumers = []
        for i in range(nblocks):
            p = f"layer{s + 1}.{i}"
            producers.append(f"{p}.conv2")
            bns.append(f"{p}.bn2")
            if i or s == 0:
                consumers.append(f"{p}.conv1")
            if isinstance(modules[f"{p}.shortcut"], nn.Sequential):
                producers.append(f"{p}.shortcut.0")
                bns.append(f"{p}.shortcut.1")
        nxt = f"layer{s + 2}.0"
        if s + 1 < len(w["stages"]):
            consumers.append(f"{nxt}.conv1")
            if isinstance(modules[f"{nxt}.shortcut"], nn.Sequential):
                consumers.append(f"{nxt}.shortcut.0")
            else:  # identity shortcut: the next stage's stream is this one
                raise OrchestratorError("option-B stages of equal width without a shortcut conv are not supported")
        else:
            consumers.append("linear")
        name = f"layer{s + 1}.stream"
        groups[name] = Group(name, producers, consumers, bns, path=("stages", s), kind="stream")
    return groups


def channel_groups(model: nn.Module, kinds: tuple[str, ...] = ("internal", "stream")) -> dict[str, Group]:
    """Removable channel groups of a zoo model by name (block groups are named after their first conv)."""
    arch, w = getattr(model, "arch", ""), getattr(model, "widths", None)
    groups: dict[str, Group] = {}
    if arch.startswith("resnet"):
        groups = _resnet_groups(model, w)
    elif arch.startswith("vgg"):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        flat = [(s, j) for s, stage in enumerate(w["stages"]) for j in range(len(stage))]
        for k, name in enumerate(convs):
            idx = int(name.split(".")[1])
            consumer = convs[k + 1] if k + 1 < len(convs) else "classifier"
            groups[name] = Group(name, [name], [consumer], [f"features.{idx + 1}"], path=("stages",) + flat[k])
    elif arch == "mobilenetv2":
        for j, b in enumerate(w["blocks"]):
            if b["expand"]:
                p = f"blocks.{j}.conv"
                groups[f"{p}.0"] = Group(f"{p}.0", [f"{p}.0"], [f"{p}.6"], [f"{p}.1", f"{p}.4"], [f"{p}.3"],
                                         path=("blocks", j, "hidden"))
    else:
        raise OrchestratorError(f"no channel groups known for arch {arch!r}; allowed: resnet*, vgg*, mobilenetv2")
    return {n: g for n, g in groups.items() if g.kind in kinds}


def stage_of(group: Group) -> int:
    """0-based stage index of a group (resnet layer{s}, vgg pooling stage, mobilenetv2 block index)."""
    return group.path[1]


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
