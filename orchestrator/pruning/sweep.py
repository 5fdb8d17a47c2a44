"""The seed's method 1 as a table: accuracy for many ratios, per method, without retraining."""

from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from ..data import Split
from ..train import evaluate
from .core import check_ratio, finalize_, prunable_layers
from ..errors import OrchestratorError
from ..finetune import FinetuneData
from .registry import METHODS, parse_config, prune_

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
DEFAULT_METHODS = ("global_magnitude", "layer_magnitude", "random")


def sweep(model: nn.Module, split: Split, normalization: dict, methods=DEFAULT_METHODS, ratios=DEFAULT_RATIOS,
          device="cpu", done: list[dict] | None = None, on_point: Callable[[list[dict]], None] | None = None,
          bn_recalibration: int = 0, train_split: Split | None = None) -> list[dict]:
    """Rows {method, ratio, sparsity, acc, loss, params, nonzero}; rows already in `done` are kept, not redone.

    With `bn_recalibration` > 0, BN statistics are re-estimated on that many `train_split` images
    after pruning (no weight is trained) and the method is labeled `<method>+bn`.
    """
    if not methods:
        raise OrchestratorError(f"no method to sweep; allowed: {', '.join(METHODS)}")
    if not ratios:
        raise OrchestratorError("no ratio to sweep; give ratios in [0, 1), e.g. 0,0.5,0.9")
    suffix = "+bn" if bn_recalibration else ""
    configs = {m + suffix: parse_config({"method": m, "bn_recalibration": bn_recalibration}) for m in methods}
    data = FinetuneData(train=train_split, normalization=normalization, device=device) if bn_recalibration else None
    ratios = [check_ratio(r) for r in ratios]
    rows = list(done or [])
    have = {(r["method"], r["ratio"]) for r in rows}
    total = sum(m.weight.numel() for m in prunable_layers(model).values())  # before pruning
    for method, config in configs.items():
        for ratio in ratios:
            if (method, ratio) in have:
                continue
            pruned = prune_(copy.deepcopy(model), config.model_copy(update={"ratio": ratio}), data)
            finalize_(pruned)
            result = evaluate(pruned.to(device), split, normalization, device)
            nonzero = sum(int((m.weight != 0).sum()) for m in prunable_layers(pruned).values())
            rows.append({"method": method, "ratio": ratio, "sparsity": 1 - nonzero / total, "acc": result["acc"],
                         "loss": result["loss"], "weights": total, "nonzero": nonzero, "split": split.name,
                         "structured": type(config).structured})
            on_point and on_point(rows)
    return rows


def table_markdown(rows: list[dict]) -> str:
    """Accuracy (%) per ratio (rows) and method (columns)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ratios = sorted({r["ratio"] for r in rows})
    acc = {(r["method"], r["ratio"]): r for r in rows}
    lines = ["| ratio | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for ratio in ratios:
        cells = [f"{100 * acc[m, ratio]['acc']:.2f}" if (m, ratio) in acc else "" for m in methods]
        lines.append(f"| {ratio:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
