"""CIFAR VGG-11/13/16/19 with batch norm, built from a width spec.

CIFAR variant: 3x3 conv-BN-ReLU stages, each closed by a 2x2 max-pool (32 -> 1 pixel after five
stages), then a single linear classifier on the last stage's channels.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from .groups import ChannelGroup

BASE_STAGES = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGGWidths(BaseModel):
    """Width spec: output channels of every conv, grouped by the 5 pooling stages."""

    model_config = ConfigDict(extra="forbid")
    stages: list[list[int]] = Field(min_length=5, max_length=5)

    @field_validator("stages")
    @classmethod
    def _positive(cls, v):
        if any(len(s) == 0 for s in v) or any(w < 1 for s in v for w in s):
            raise ValueError("every stage needs >= 1 conv and every width must be >= 1")
        return v


def default_widths(depth: int, width_mult: float = 1.0) -> VGGWidths:
    if depth not in BASE_STAGES:
        raise ValueError(f"VGG depth {depth} not supported; allowed: {sorted(BASE_STAGES)}")
    return VGGWidths(stages=[[max(1, round(w * width_mult)) for w in s] for s in BASE_STAGES[depth]])


class CifarVGG(nn.Module):
    def __init__(self, widths: VGGWidths, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        self.stage_of = {}  # index in `features` of each conv -> its pooling stage (1-based)
        for k, stage in enumerate(widths.stages):
            for w in stage:
                self.stage_of[len(layers)] = k + 1
                layers += [nn.Conv2d(in_ch, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                in_ch = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))

    def layer_group(self, name: str) -> str:
        """stage1..5 (the pooling stages) or classifier: the units per-group ratios and bits name."""
        return "classifier" if name == "classifier" else f"stage{self.stage_of[int(name.split('.')[1])]}"

    def channel_groups(self) -> dict[str, ChannelGroup]:
        """The output channels of every conv (-> its BN -> the next conv or the classifier)."""
        convs = [n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        flat = [(s, j) for s, stage in enumerate(self.widths["stages"]) for j in range(len(stage))]
        groups = {}
        for k, name in enumerate(convs):
            idx = int(name.split(".")[1])
            consumer = convs[k + 1] if k + 1 < len(convs) else "classifier"
            groups[name] = ChannelGroup(name, [name], [consumer], [f"features.{idx + 1}"], path=("stages",) + flat[k],
                                        stage=flat[k][0])
        return groups
