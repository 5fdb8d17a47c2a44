"""Structured methods: channels are removed (channel surgery), the result is a smaller dense model.

- l1_filter: Li et al. 2017, filters ranked by L1 norm, a ratio per layer or stage, sensitive
  layers skipped (by name, or from a sensitivity analysis with `max_drop`), one shot or stage by
  stage with retraining between stages;
- random_filter: the same budget with random channels (the control);
- slimming: Network Slimming (Liu et al. 2017), L1 on BN scales while training, then the channels
  with the smallest |gamma| are removed under one global threshold.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from .channels import (BNScale, Importance, L1Norm, RandomImportance, check_groups, group_ratios, keep_global,
                       keep_per_group)
from .core import ratio_sets
from ..finetune import FinetuneConfig, FinetuneData, finetune
from ..values import Ratio
from .registry import GroupRatios, PruneConfig, register
from .sensitivity import DEFAULT_RATIOS, ratios_within, sensitivity
from .surgery import channel_groups, remove_channels

Kinds = Literal["internal", "all"]  # block-internal channels only, or also coupled (option-B stream) ones


def kinds(scope: str) -> tuple[str, ...]:
    return ("internal",) if scope == "internal" else ("internal", "stream")


class ChannelRatios(PruneConfig):
    """What every channel-removal method reads: a ratio of each channel group's channels, per stage or per
    group, the groups left whole, and the fine-tune after the removal (filter pruning, ThiNet)."""

    structured = True
    ratio: Ratio = 0.5  # fraction of each group's channels removed
    stage_ratios: list[Ratio] | None = None  # one ratio per stage (the model family's stage map), overrides `ratio`
    ratios: dict[str, Ratio] = {}  # per channel group name, overrides all of the above
    skip: list[str] = []  # groups left whole (the sensitive ones)
    finetune: FinetuneConfig = FinetuneConfig()  # after all stages (one_shot) or after each stage

    def check(self, model: nn.Module) -> None:
        super().check(model)
        check_groups(model, [*self.skip, *self.ratios], self.stage_ratios)


class FilterConfig(ChannelRatios):
    """What every per-group filter-pruning method shares: ratios per group, stage or channel group, skips, mode."""

    group_ratios: GroupRatios = {}  # per layer group (stem, stage1.., classifier): its channel groups' ratio
    groups: Kinds = "internal"
    min_keep: int = Field(1, ge=1)  # channels every group keeps
    mode: Literal["one_shot", "stagewise"] = "one_shot"  # stagewise: prune a stage, retrain, next stage

    def check(self, model: nn.Module) -> None:
        super().check(model)
        ratio_sets(model, self.ratio, self.group_ratios)


class L1Filter(FilterConfig):
    method: Literal["l1_filter"] = "l1_filter"
    max_drop: float | None = Field(None, ge=0, le=1)  # from a sensitivity analysis: largest ratio per group
    # whose validation accuracy drop stays within this (fraction, 0.01 = one point); needs val data
    sensitivity_ratios: list[Ratio] = list(DEFAULT_RATIOS)

    def needs_data(self) -> bool:
        return super().needs_data() or self.max_drop is not None


class RandomFilter(FilterConfig):
    method: Literal["random_filter"] = "random_filter"
    seed: int = Field(0, ge=0)


def prune_filters(model: nn.Module, config: FilterConfig, data: FinetuneData | None,
                  importance: Importance) -> nn.Module:
    groups = channel_groups(model, kinds(config.groups))
    listed = {n: r for r, names in ratio_sets(model, config.ratio, config.group_ratios)[:len(config.group_ratios)]
              for n in names}  # layers of the groups given a ratio; a channel group follows its first producer
    per_group = {**{n: listed[g.producers[0]] for n, g in groups.items() if g.producers[0] in listed},
                 **config.ratios}
    if getattr(config, "max_drop", None) is not None:
        val = data.require("val", config.method)
        table = sensitivity(model, val, data.normalization, config.sensitivity_ratios, kinds(config.groups),
                            device=data.device)
        data.log.append({"step": "sensitivity", "table": table})
        per_group = {**ratios_within(table, config.max_drop), **per_group}
    ratios = group_ratios(model, groups, config.ratio, config.stage_ratios, config.skip, per_group)
    if config.mode == "one_shot":
        batches = [list(groups)]
    else:
        stages = sorted({g.stage for g in groups.values()})
        batches = [[n for n, g in groups.items() if g.stage == s] for s in stages]
    for i, names in enumerate(batches):
        current = channel_groups(model, kinds(config.groups))
        scores = {n: importance(model, current[n]) for n in names}
        keep = keep_per_group(scores, {n: ratios[n] for n in names}, config.min_keep)
        if keep:
            model = remove_channels(model, keep)
        if config.mode == "stagewise" or i == len(batches) - 1:
            finetune(model, config.finetune, data, f"stage{i + 1}" if config.mode == "stagewise" else "finetune")
    return model


@register(L1Filter)
def l1_filter(model: nn.Module, config: L1Filter, data: FinetuneData | None) -> nn.Module:
    return prune_filters(model, config, data, L1Norm())


@register(RandomFilter)
def random_filter(model: nn.Module, config: RandomFilter, data: FinetuneData | None) -> nn.Module:
    return prune_filters(model, config, data, RandomImportance(config.seed))


class Slimming(PruneConfig):
    """Train with an L1 penalty on the BN scales, remove the lowest |gamma| channels globally, fine-tune."""

    structured = True
    method: Literal["slimming"] = "slimming"
    ratio: Ratio = 0.5  # fraction of all channels in the pruned groups removed
    penalty: float = Field(1e-4, ge=0, le=1)  # lambda of lambda * sum |gamma| (Liu et al.: 1e-4 for CIFAR)
    sparsify: FinetuneConfig = FinetuneConfig(epochs=1)  # training with the penalty
    groups: Kinds = "internal"
    min_keep: int = Field(1, ge=1)
    finetune: FinetuneConfig = FinetuneConfig()

    def needs_data(self) -> bool:
        return bool(self.sparsify.epochs) or super().needs_data()


@register(Slimming)
def slimming(model: nn.Module, config: Slimming, data: FinetuneData | None) -> nn.Module:
    groups = channel_groups(model, kinds(config.groups))
    gammas = [model.get_submodule(b).weight for g in groups.values() for b in g.bns]
    finetune(model, config.sparsify, data, "sparsify",
             penalty=lambda: config.penalty * sum(g.abs().sum() for g in gammas))
    scores = {n: BNScale()(model, g) for n, g in groups.items()}
    model = remove_channels(model, keep_global(scores, config.ratio, config.min_keep))
    finetune(model, config.finetune, data, "finetune")
    return model
