"""Pruning vocabulary, kept apart (Torch-Pruning / ShrinkBench style):

- importance: scores per weight (`core`) or per channel (`channels`);
- selection: scores -> masks or kept channel indices for a target ratio, global or per layer, with a
  minimum kept per layer;
- application: masks through torch.nn.utils.prune (`weight_orig` + `weight_mask` while training,
  `finalize_` makes them permanent), or channel surgery (`surgery`: a smaller dense model);
- schedule: the ratio at each round.

Methods are registered configs (`registry`); `prune_(model, config, data)` runs one.
"""

from . import structured, taylor, thinet, unstructured  # noqa: F401  (registers the methods)
from .core import finalize_, sparsity
from .registry import METHODS, PruneConfig, parse_config, prune_

__all__ = ["METHODS", "PruneConfig", "finalize_", "parse_config", "prune_", "sparsity"]
