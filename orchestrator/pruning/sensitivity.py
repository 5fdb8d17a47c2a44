"""Li et al. 2017's sensitivity analysis: prune each channel group alone at several ratios, measure accuracy.

The table decides per-group ratios and which groups to skip (`ratios_within`). Accuracy is taken
on a validation split (held-out training images), never on the test set that reports results.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..data import Split
from ..train import evaluate
from .channels import IMPORTANCE, keep_per_group
from .core import check_ratio
from .surgery import channel_groups, remove_channels

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def sensitivity(model: nn.Module, split: Split, normalization: dict, ratios=DEFAULT_RATIOS,
                kinds: tuple[str, ...] = ("internal",), importance: str = "l1", device="cpu",
                done: dict | None = None, on_point: Callable[[dict], None] | None = None) -> dict:
    """{'baseline': acc, 'groups': {group: {ratio: acc}}}, continuing from a partial table `done`."""
    ratios = [check_ratio(r) for r in ratios]
    table = done or {"baseline": None, "groups": {}}
    model = model.to(device).eval()
    if table["baseline"] is None:
        table["baseline"] = evaluate(model, split, normalization, device)["acc"]
        on_point and on_point(table)
    for name, g in channel_groups(model, kinds).items():
        scores = {name: IMPORTANCE[importance]()(model, g)}
        row = table["groups"].setdefault(name, {})
        for r in ratios:
            if str(r) in row:
                continue
            small = remove_channels(model, keep_per_group(scores, {name: r}))
            row[str(r)] = evaluate(small, split, normalization, device)["acc"]
            on_point and on_point(table)
    return table


def ratios_within(table: dict, max_drop: float) -> dict[str, float]:
    """Per group, the largest tested ratio whose accuracy drop is at most `max_drop` (0: skip the group).

    Drops are taken in order of increasing ratio and the search stops at the first one too large, so
    a noisy recovery at a higher ratio is not trusted.
    """
    out = {}
    for name, row in table["groups"].items():
        best = 0.0
        for r, acc in sorted((float(k), v) for k, v in row.items()):
            if table["baseline"] - acc > max_drop:
                break
            best = r
        out[name] = best
    return out

