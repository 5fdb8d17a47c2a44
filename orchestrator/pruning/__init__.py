"""Pruning vocabulary, kept apart (Torch-Pruning / ShrinkBench style):

- importance: scores per weight (or per channel);
- selection: scores -> masks for a target ratio, global or per layer, with a minimum kept per layer;
- application: masks through torch.nn.utils.prune (`weight_orig` + `weight_mask` while training),
  `finalize_` makes them permanent;
- schedule: the ratio at each round.
"""
