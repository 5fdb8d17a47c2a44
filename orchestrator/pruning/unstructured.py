"""Unstructured methods: weights zeroed through torch.nn.utils.prune masks (the shapes stay).

- global_magnitude: the lowest |w| across all conv/linear layers (the seed's method 1);
- layer_magnitude: the same fraction of lowest |w| in every layer;
- random: random weights, the control every pruning paper needs;
- han: Han et al. 2015, prune then retrain with the mask fixed, over rounds of a schedule;
- lottery: iterative magnitude pruning with weight rewinding (Frankle & Carbin 2019; Frankle et
  al. 2020): train, prune, reset the surviving weights to the rewind point, repeat.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from . import core
from ..finetune import FinetuneConfig, FinetuneData, finetune
from ..values import Ratio
from .registry import GroupRatios, PruneConfig, register


class _Ratio(PruneConfig):
    ratio: Ratio = 0.5  # fraction of conv/linear weights set to zero
    group_ratios: GroupRatios = {}  # per layer group (stem, stage1.., classifier): its own ratio
    min_keep: int = Field(1, ge=0)  # weights every layer keeps at least
    finetune: FinetuneConfig = FinetuneConfig()

    def check(self, model: nn.Module) -> None:
        super().check(model)
        core.ratio_sets(model, self.ratio, self.group_ratios)


class GlobalMagnitude(_Ratio):
    method: Literal["global_magnitude"] = "global_magnitude"


class LayerMagnitude(_Ratio):
    method: Literal["layer_magnitude"] = "layer_magnitude"


class RandomUnstructured(_Ratio):
    method: Literal["random"] = "random"
    seed: int = Field(0, ge=0)


def _one_shot(model, scores_fn, select, config, data):
    """Score, select per ratio set (`select(scores, ratio, min_keep)`), attach masks, fine-tune."""
    layers = core.prunable_layers(model)
    scores = scores_fn(layers)
    masks = {}
    for ratio, names in core.ratio_sets(model, config.ratio, config.group_ratios):
        masks.update(select({n: scores[n] for n in names}, ratio, config.min_keep))
    core.apply_masks_(layers, masks)
    finetune(model, config.finetune, data, "finetune")
    return model


@register(GlobalMagnitude)
def global_magnitude(model: nn.Module, config: GlobalMagnitude, data: FinetuneData | None) -> nn.Module:
    return _one_shot(model, core.magnitude, core.select_global, config, data)


@register(LayerMagnitude)
def layer_magnitude(model: nn.Module, config: LayerMagnitude, data: FinetuneData | None) -> nn.Module:
    return _one_shot(model, core.magnitude, core.select_per_layer, config, data)


@register(RandomUnstructured)
def random(model: nn.Module, config: RandomUnstructured, data: FinetuneData | None) -> nn.Module:
    return _one_shot(model, lambda ls: core.random_scores(ls, config.seed), core.select_global, config, data)


class _Rounds(PruneConfig):
    """Iterative magnitude pruning: `rounds` rounds of pruning and training, the zeros growing to `ratio` along
    `schedule` (Han and Lottery)."""

    ratio: Ratio = 0.8  # final fraction of zero weights
    rounds: int = Field(3, ge=1, le=100)
    schedule: Literal["one_shot", "geometric", "cubic"] = "geometric"
    finetune: FinetuneConfig = FinetuneConfig(epochs=1)  # training per round


class Han(_Rounds):
    """Prune to the schedule's level, retrain `finetune.epochs` with the mask fixed, repeat for `rounds`."""

    method: Literal["han"] = "han"
    scope: Literal["global", "layer"] = "global"  # one threshold for all layers, or the same ratio per layer
    min_keep: int = Field(1, ge=0)


@register(Han)
def han(model: nn.Module, config: Han, data: FinetuneData | None) -> nn.Module:
    layers = core.prunable_layers(model)
    for r, level in enumerate(core.schedule(config.ratio, config.rounds, config.schedule)):
        scores = core.magnitude(layers)  # pruned weights score 0, so masks only grow
        select = core.select_global if config.scope == "global" else core.select_per_layer
        core.apply_masks_(layers, select(scores, level, config.min_keep))
        finetune(model, config.finetune, data, f"round{r + 1}")
        if data is not None:
            data.log.append({"step": f"round{r + 1}", "sparsity": core.sparsity(model)["total"]})
    return model


class Lottery(_Rounds):
    """Iterative magnitude pruning with rewinding; the incoming weights, trained for
    `rewind_epochs`, are the rewind point (a random init and 0 gives the original lottery ticket)."""

    method: Literal["lottery"] = "lottery"
    rewind_epochs: int = Field(0, ge=0)  # epochs trained before the rewind point is taken

    def needs_data(self) -> bool:
        return True


@register(Lottery)
def lottery(model: nn.Module, config: Lottery, data: FinetuneData | None) -> nn.Module:
    layers = core.prunable_layers(model)
    finetune(model, config.finetune.model_copy(update={"epochs": config.rewind_epochs}), data, "rewind")
    rewind = copy.deepcopy(model.state_dict())
    for r, level in enumerate(core.schedule(config.ratio, config.rounds, config.schedule)):
        finetune(model, config.finetune, data, f"train{r}")
        core.apply_masks_(layers, core.select_global(core.magnitude(layers), level))
        _rewind_(model, rewind)
    finetune(model, config.finetune, data, "ticket")
    return model


@torch.no_grad()
def _rewind_(model: nn.Module, state: dict) -> None:
    """Reset weights and BN statistics to `state`; masks stay (masked weights are reset under them)."""
    current = model.state_dict()
    for key, value in state.items():
        target = key if key in current else key.replace(".weight", ".weight_orig")
        if target in current and not target.endswith("_mask"):
            current[target].copy_(value)
