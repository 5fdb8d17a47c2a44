"""Unstructured pruning primitives: importance, selection, application, schedule.

Methods (global magnitude, layer-wise magnitude, random, iterative prune + retrain) are short
compositions of these functions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import OrchestratorError
from ..values import Ratio, check
from ..models import layer_groups

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers by qualified name; an error if there are none."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
    if not layers:
        raise OrchestratorError(f"{type(model).__name__} has no prunable (conv or linear) layers")
    return layers


def check_ratio(ratio) -> float:
    """A primitive's ratio argument, by the one `Ratio` rule configs use."""
    return check(Ratio, ratio, "pruning ratio")


def effective_weight(module: nn.Module) -> torch.Tensor:
    """weight_orig x weight_mask under a mask, else weight.

    The `weight` attribute of a masked module is only recomputed by the next forward pass, so it
    is stale after an optimizer step or a state-dict load; never read it directly.
    """
    if hasattr(module, "weight_orig"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


# importance ------------------------------------------------------------------------------------

def magnitude(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """|w| of the effective weights (already-pruned weights score 0)."""
    return {n: effective_weight(m).abs() for n, m in layers.items()}


def random_scores(layers: dict[str, nn.Module], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random scores (the control); already-pruned weights keep scoring lowest."""
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.rand(m.weight.shape, generator=g) + 1) * (effective_weight(m) != 0).cpu()
            for n, m in layers.items()}


# selection -------------------------------------------------------------------------------------

def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    scores = scores.cpu()  # masks are built on the CPU whatever the model's device (apply_masks_ moves them)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(scores.reshape(-1).float(), keep, sorted=False).indices] = True
    return mask.view(scores.shape)


def select_global(scores: dict[str, torch.Tensor], ratio: float, min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Masks that remove exactly round(ratio x total) lowest-scoring weights across all layers.

    Every layer keeps at least `min_keep` weights (its best ones), so no layer is cut off entirely.
    """
    ratio = check_ratio(ratio)
    total = sum(s.numel() for s in scores.values())
    keep_total = total - round(ratio * total)
    reserved = {n: _keep_top(s, min(min_keep, s.numel())) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1).float().cpu().masked_fill(reserved[n].reshape(-1), math.inf)
                      for n, s in scores.items()])
    keep_total = max(keep_total, sum(int(r.sum()) for r in reserved.values()))
    kept = torch.zeros(total, dtype=torch.bool)
    kept[torch.topk(flat, keep_total, sorted=False).indices] = True
    masks, pos = {}, 0
    for n, s in scores.items():
        masks[n] = kept[pos:pos + s.numel()].view(s.shape).clone()
        pos += s.numel()
    return masks


def select_per_layer(scores: dict[str, torch.Tensor], ratios: dict[str, float] | float,
                     min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Masks removing round(ratio x size) weights in each layer (one ratio, or one per layer name)."""
    masks = {}
    for n, s in scores.items():
        r = check_ratio(ratios if isinstance(ratios, (int, float)) else ratios.get(n, 0.0))
        masks[n] = _keep_top(s, max(min(min_keep, s.numel()), s.numel() - round(r * s.numel())))
    return masks


def ratio_sets(model: nn.Module, ratio: float, group_ratios: dict[str, float]) -> list[tuple[float, list[str]]]:
    """(ratio, layer names) pairs: each group of `group_ratios` at its own ratio, the other layers at `ratio`."""
    groups = layer_groups(model)
    unknown = [g for g in group_ratios if g not in groups]
    if unknown:
        raise OrchestratorError(f"group_ratios names group {unknown[0]!r}, which {getattr(model, 'arch', 'the model')} "
                                f"does not have; groups: {', '.join(groups)}")
    rest = [n for g, names in groups.items() if g not in group_ratios for n in names]
    sets = [(r, groups[g]) for g, r in group_ratios.items()]
    return sets + ([(ratio, rest)] if rest else [])


# application -----------------------------------------------------------------------------------

def apply_masks_(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Attach masks with torch.nn.utils.prune (combined with any mask already there)."""
    for n, mask in masks.items():
        prune.custom_from_mask(layers[n], "weight", mask.to(layers[n].weight.device))


def finalize_(model: nn.Module) -> nn.Module:
    """Make every mask permanent: plain `weight` tensors, no `weight_orig` / `weight_mask` left."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
    return model


def prune_global_magnitude_(model: nn.Module, ratio: float) -> nn.Module:
    """Global L1 magnitude pruning to `ratio` across all conv/linear layers, masks attached."""
    layers = prunable_layers(model)
    apply_masks_(layers, select_global(magnitude(layers), ratio))
    return model


def sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights per prunable layer and overall ('total')."""
    layers = prunable_layers(model)
    zeros = {n: int((effective_weight(m) == 0).sum()) for n, m in layers.items()}
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    out = {n: zeros[n] / sizes[n] for n in layers}
    out["total"] = sum(zeros.values()) / sum(sizes.values())
    return out


# schedule --------------------------------------------------------------------------------------

def schedule(target: float, rounds: int, kind: str = "geometric") -> list[float]:
    """Cumulative sparsity after each round, ending at `target`.

    one_shot: [target]; geometric (Han et al.): the kept fraction shrinks by the same factor each
    round; cubic (Zhu & Gupta's AGP): s_t = target (1 - (1 - t/rounds)^3), fast early, slow late.
    """
    target = check_ratio(target)
    if rounds < 1:
        raise OrchestratorError(f"rounds={rounds} must be >= 1")
    if kind == "one_shot":
        return [target]
    if kind == "geometric":
        return [1 - (1 - target) ** ((t + 1) / rounds) for t in range(rounds)]
    if kind == "cubic":
        return [target * (1 - (1 - (t + 1) / rounds) ** 3) for t in range(rounds)]
    raise OrchestratorError(f"unknown schedule {kind!r}; allowed: one_shot, geometric, cubic")
