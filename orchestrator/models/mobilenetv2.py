"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs, built from a width spec.

CIFAR variant: stride-1 stem and stride 1 in the second stage (two fewer downsamplings than the
ImageNet net), so the last feature map is 4x4. A block has a residual only when its stride is 1
and its input and output widths match, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .groups import ChannelGroup

# (expansion t, output channels c, repeats n, first stride s), CIFAR strides
BASE_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]


class BlockWidths(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(ge=1)  # depthwise channels (= input channels when expand is False)
    out: int = Field(ge=1)  # projection output channels
    stride: int = Field(ge=1, le=2)
    expand: bool = True  # whether a 1x1 expansion conv precedes the depthwise conv


class MobileNetV2Widths(BaseModel):
    """Width spec: stem channels, every inverted-residual block, head (last 1x1 conv) channels."""

    model_config = ConfigDict(extra="forbid")
    stem: int = Field(ge=1)
    blocks: list[BlockWidths] = Field(min_length=1)
    head: int = Field(ge=1)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to a multiple of 8 without going more than 10% down (the reference rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def default_widths(width_mult: float = 1.0) -> MobileNetV2Widths:
    stem = make_divisible(32 * width_mult)
    blocks, in_ch = [], stem
    for t, c, n, s in BASE_CONFIG:
        out = make_divisible(c * width_mult)
        for i in range(n):
            blocks.append(BlockWidths(hidden=in_ch * t, out=out, stride=s if i == 0 else 1, expand=t != 1))
            in_ch = out
    return MobileNetV2Widths(stem=stem, blocks=blocks, head=make_divisible(1280 * max(1.0, width_mult)))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, w: BlockWidths):
        super().__init__()
        if not w.expand and w.hidden != in_ch:
            raise ValueError(f"a block without expansion needs hidden == input channels ({in_ch}), got {w.hidden}")
        layers: list[nn.Module] = []
        if w.expand:
            layers += [nn.Conv2d(in_ch, w.hidden, 1, bias=False), nn.BatchNorm2d(w.hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(w.hidden, w.hidden, 3, w.stride, 1, groups=w.hidden, bias=False),
                   nn.BatchNorm2d(w.hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(w.hidden, w.out, 1, bias=False), nn.BatchNorm2d(w.out)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = w.stride == 1 and in_ch == w.out

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    def __init__(self, widths: MobileNetV2Widths, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths.stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths.stem), nn.ReLU6(inplace=True))
        blocks, in_ch = [], widths.stem
        # block index -> stage (1-based): the reference's rows (t, c, n, s), whatever the widths
        self.stage_of = [k + 1 for k, (_, _, n, _) in enumerate(BASE_CONFIG) for _ in range(n)]
        for w in widths.blocks:
            blocks.append(InvertedResidual(in_ch, w))
            in_ch = w.out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(in_ch, widths.head, 1, bias=False),
                                  nn.BatchNorm2d(widths.head), nn.ReLU6(inplace=True))
        self.classifier = nn.Linear(widths.head, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def layer_group(self, name: str) -> str:
        """stem, stage1..7, head or classifier: the units per-group ratios and bits name."""
        top = name.split(".")[0]
        if top != "blocks":
            return top
        i = int(name.split(".")[1])
        return f"stage{self.stage_of[i]}" if i < len(self.stage_of) else "blocks"

    def channel_groups(self) -> dict[str, ChannelGroup]:
        """The hidden channels of each expanding block (expand conv -> bn -> depthwise -> bn -> project);
        the residual stream stays whole."""
        groups = {}
        for j, b in enumerate(self.widths["blocks"]):
            if b["expand"]:
                p = f"blocks.{j}.conv"
                stage = self.stage_of[j] - 1 if j < len(self.stage_of) else self.stage_of[-1] - 1
                groups[f"{p}.0"] = ChannelGroup(f"{p}.0", [f"{p}.0"], [f"{p}.6"], [f"{p}.1", f"{p}.4"], [f"{p}.3"],
                                                path=("blocks", j, "hidden"), stage=stage)
        return groups
