"""Channel importance and selection for structured methods (the application is `surgery`).

Scores are per channel of a group; selection turns them into kept indices per group, with one
ratio per group (Li et al.: a ratio per layer or stage, sensitive layers skipped) or one global
threshold over comparable scores (Network Slimming's BN scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import OrchestratorError
from .core import check_ratio
from .surgery import Group, channel_groups, filter_l1


class Importance:
    """Channel scores of one group (higher: kept), `importance(model, group) -> tensor[group.size(model)]`: an
    object that carries its own options (a seed, calibration data), like Torch-Pruning's `Importance`."""

    name = ""

    def __call__(self, model: nn.Module, group: Group) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class L1Norm(Importance):
    """Li et al. 2017: the L1 norm of each output filter of the group's producers."""

    name = "l1"

    def __call__(self, model: nn.Module, group: Group) -> torch.Tensor:
        return filter_l1(model, group)


@dataclass(frozen=True)
class BNScale(Importance):
    """Network Slimming: |gamma| of the group's BNs (summed when a group has several)."""

    name = "bn_scale"

    def __call__(self, model: nn.Module, group: Group) -> torch.Tensor:
        return sum(model.get_submodule(b).weight.detach().abs() for b in group.bns)


@dataclass(frozen=True)
class RandomImportance(Importance):
    """Uniform random scores, reproducible per (seed, group): the baseline every criterion must beat."""

    seed: int = 0
    name = "random"

    def __call__(self, model: nn.Module, group: Group) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + sum(map(ord, group.name)))
        return torch.rand(group.size(model), generator=g)


@dataclass
class Cached(Importance):
    """Scores computed for every group at once (`score_all(model) -> {group: scores}`, e.g. from gradients),
    recomputed when the model is rebuilt (stagewise pruning rescores after each stage)."""

    score_all: object
    name: str = "cached"
    _scores: dict = field(default_factory=dict)

    def __call__(self, model: nn.Module, group: Group) -> torch.Tensor:
        if id(model) not in self._scores:
            self._scores.clear()
            self._scores[id(model)] = self.score_all(model)
        return self._scores[id(model)][group.name]


IMPORTANCE = {cls.name: cls for cls in (L1Norm, BNScale, RandomImportance)}  # name -> Importance class


def check_groups(model: nn.Module, names, stage_ratios: list[float] | None = None) -> None:
    """Refuse channel group names the model lacks and more stage ratios than it has stages (a config's
    model-dependent values, checked before a pipeline spends any work)."""
    groups = channel_groups(model)
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise OrchestratorError(f"unknown channel group {unknown[0]!r}; allowed: {', '.join(groups)}")
    stages = 1 + max(g.stage for g in groups.values())
    if stage_ratios is not None and len(stage_ratios) > stages:
        raise OrchestratorError(f"stage_ratios has {len(stage_ratios)} entries; {model.arch} has {stages} "
                                f"stages: give at most {stages}")


def group_ratios(model: nn.Module, groups: dict[str, Group], ratio: float, stage_ratios: list[float] | None = None,
                 skip: list[str] = (), per_group: dict[str, float] | None = None) -> dict[str, float]:
    """Ratio per group: `per_group` entries, else the stage's ratio, else `ratio`; skipped groups 0."""
    check_groups(model, [*skip, *(per_group or {})], stage_ratios)
    out = {}
    for name, g in groups.items():
        if name in skip:
            r = 0.0
        elif per_group and name in per_group:
            r = per_group[name]
        elif stage_ratios is not None:
            s = g.stage
            if s >= len(stage_ratios):
                raise OrchestratorError(f"stage_ratios has {len(stage_ratios)} entries; {model.arch} has a stage {s + 1}")
            r = stage_ratios[s]
        else:
            r = ratio
        out[name] = check_ratio(r)
    return out


def keep_per_group(scores: dict[str, torch.Tensor], ratios: dict[str, float], min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Sorted indices of the highest-scoring channels; a group keeps floor((1 - ratio) x size).

    Rounding the kept count down is what Li et al.'s code does: with it, their ResNet-56-pruned-B
    recipe gives exactly their reported -13.7% parameters and -27.6% FLOPs (tested).
    """
    keep = {}
    for name, s in scores.items():
        r = ratios.get(name, 0.0)
        if not r:
            continue
        n = max(min(min_keep, len(s)), math.floor((1 - r) * len(s) + 1e-9))
        keep[name] = torch.topk(s.float(), n).indices.sort().values
    return keep


def keep_global(scores: dict[str, torch.Tensor], ratio: float, min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Remove the round(ratio x total) lowest-scoring channels over all groups (at least `min_keep` kept each)."""
    ratio = check_ratio(ratio)
    names = list(scores)
    flat = torch.cat([scores[n].float() for n in names])
    owner = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)])
    boost = torch.zeros_like(flat)
    for i, n in enumerate(names):  # each group's best min_keep channels are never removed
        top = torch.topk(scores[n].float(), min(min_keep, len(scores[n]))).indices
        boost[(owner == i).nonzero().squeeze(1)[top]] = torch.inf
    n_keep = max(len(flat) - round(ratio * len(flat)), int(torch.isinf(boost).sum()))
    kept = torch.zeros(len(flat), dtype=torch.bool)
    kept[torch.topk(flat + boost, n_keep).indices] = True
    return {n: kept[owner == i].nonzero().squeeze(1) for i, n in enumerate(names)}
