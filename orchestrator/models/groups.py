"""Channel groups: the channels that must be removed together, as each model family declares them.

A group is the output channels of its producer convs, the BNs after them, any depthwise conv (and
its BN) running on them, and the matching input channels of its consumers. Every zoo model has a
`channel_groups()` method (read off its width spec) and a `layer_group(name)` map, so structured
pruning and per-group configs never branch on architecture names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn


@dataclass
class ChannelGroup:
    name: str
    producers: list[str]  # convs whose output channels are removed
    consumers: list[str]  # convs/linears whose input channels are removed
    bns: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    path: tuple = ()  # where this group's width lives in the width spec
    kind: Literal["internal", "stream"] = "internal"
    stage: int = 0  # 0-based stage (what stage_ratios and stage-wise pruning index)

    def size(self, model: nn.Module) -> int:
        return model.get_submodule(self.producers[0]).out_channels
