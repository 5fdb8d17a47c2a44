"""CIFAR ResNets of He et al. 2016 (depth 6n+2), built from a width spec.

The spec gives the residual-stream width of each stage and the inner width of each block, so a
structurally pruned network is the same class with other numbers. Parameter names follow the
public reference implementation (conv1, bn1, layer{1,2,3}.{i}.conv1/bn1/conv2/bn2, linear) so
its checkpoints load as they are.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..errors import ModelSpecError
from .groups import ChannelGroup

BASE_STAGE_WIDTHS = (16, 32, 64)


class ResNetWidths(BaseModel):
    """Width spec: stream width per stage, inner (conv1 output) width per block."""

    model_config = ConfigDict(extra="forbid")
    shortcut: Literal["A", "B"] = "A"  # A: parameter-free stride + zero padding; B: 1x1 conv + BN
    stages: list[int] = Field(min_length=3, max_length=3)  # channels of the residual stream
    blocks: list[list[int]] = Field(min_length=3, max_length=3)  # inner channels, per block

    @model_validator(mode="after")
    def _check(self):
        if any(w < 1 for w in self.stages) or any(w < 1 for s in self.blocks for w in s):
            raise ValueError("all widths must be >= 1")
        n = {len(s) for s in self.blocks}
        if len(n) != 1 or 0 in n:
            raise ValueError(f"every stage needs the same number (>=1) of blocks, got {[len(s) for s in self.blocks]}")
        if self.shortcut == "A" and any(b < a for a, b in zip(self.stages, self.stages[1:])):
            raise ValueError(f"option A shortcuts only widen the stream; stages {self.stages} shrink")
        return self

    @property
    def depth(self) -> int:
        return 6 * len(self.blocks[0]) + 2


def default_widths(depth: int, width_mult: float = 1.0, shortcut: str = "A") -> ResNetWidths:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"ResNet depth {depth} is not of the form 6n+2 (20, 32, 44, 56, 110, ...)")
    n = (depth - 2) // 6
    stages = [max(1, round(w * width_mult)) for w in BASE_STAGE_WIDTHS]
    return ResNetWidths(shortcut=shortcut, stages=stages, blocks=[[w] * n for w in stages])


class ShortcutA(nn.Module):
    """Identity, or x[:, :, ::2, ::2] zero-padded (half the extra channels on each side)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, inner: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, widths: ResNetWidths, num_classes: int = 10):
        super().__init__()
        s = widths.stages
        self.conv1 = nn.Conv2d(3, s[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(s[0])
        in_planes = s[0]
        for i, (planes, inner_widths) in enumerate(zip(s, widths.blocks)):
            blocks = []
            for j, inner in enumerate(inner_widths):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, inner, planes, stride, widths.shortcut))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(s[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x)

    GROUPS = {"conv1": "stem", "linear": "classifier"}

    def channel_groups(self) -> dict[str, ChannelGroup]:
        """Each block's inner channels (conv1 -> bn1 -> conv2), kind "internal"; with option-B shortcuts
        also each stage's residual stream (the stem or shortcut conv and every block's conv2 write it,
        every block's conv1, the next shortcut and the classifier read it), kind "stream". Option A's
        zero-padding shortcut ties stream channels to fixed positions, so its stream stays whole."""
        w = self.widths
        groups: dict[str, ChannelGroup] = {}
        nblocks = len(w["blocks"][0])
        for s in range(len(w["blocks"])):
            for i in range(nblocks):
                p = f"layer{s + 1}.{i}"
                groups[f"{p}.conv1"] = ChannelGroup(f"{p}.conv1", [f"{p}.conv1"], [f"{p}.conv2"], [f"{p}.bn1"],
                                                    path=("blocks", s, i), stage=s)
        if w.get("shortcut") != "B":
            return groups
        modules = dict(self.named_modules())
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
                if not isinstance(modules[f"{nxt}.shortcut"], nn.Sequential):  # identity: one stream for two stages
                    raise ModelSpecError("option-B stages of equal width without a shortcut conv are not supported")
                consumers.append(f"{nxt}.shortcut.0")
            else:
                consumers.append("linear")
            name = f"layer{s + 1}.stream"
            groups[name] = ChannelGroup(name, producers, consumers, bns, path=("stages", s), kind="stream", stage=s)
        return groups

    def layer_group(self, name: str) -> str:
        """The group (stem, stage1..3, classifier) a conv/linear layer belongs to: per-group ratios and bits."""
        top = name.split(".")[0]
        return self.GROUPS.get(top, top.replace("layer", "stage"))


def public_resnet(state: dict) -> tuple[str, dict, int, dict]:
    """(arch, widths, classes, state dict) of a reference-format CIFAR ResNet state dict (`module.` prefixes
    dropped): depth, widths and shortcut type are read off the tensor shapes, so any depth, and a channel-pruned
    one, rebuilds. KeyError naming what is missing when it is no such ResNet."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        blocks = []
        for stage in (1, 2, 3):
            idx = sorted({int(m[1]) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))})
            if not idx or idx != list(range(len(idx))):
                raise KeyError(f"layer{stage} blocks")
            blocks.append([state[f"layer{stage}.{i}.conv1.weight"].shape[0] for i in idx])
        stages = [state[f"layer{s}.0.conv2.weight"].shape[0] for s in (1, 2, 3)]
        num_classes = state["linear.weight"].shape[0]
    except IndexError as exc:
        raise KeyError(str(exc)) from None
    shortcut = "B" if any(".shortcut.0.weight" in k for k in state) else "A"
    arch = f"resnet{6 * len(blocks[0]) + 2}{'b' if shortcut == 'B' else ''}"
    return arch, {"shortcut": shortcut, "stages": stages, "blocks": blocks}, num_classes, state
