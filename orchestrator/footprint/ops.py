"""Multiply-accumulates per conv/linear layer, dense and sparse, from the shapes of one traced inference.

A conv weight element is used once per output pixel, so sparse MACs = batch x H_out x W_out x nonzeros
(grouped and depthwise convs included); a linear weight element once per sample.
"""

from __future__ import annotations

import math

from torch import fx, nn


def layer_macs(gm: fx.GraphModule, model: nn.Module) -> dict[str, dict]:
    """{module name: {'macs': dense, 'macs_sparse': sparse}} for every conv and linear call.

    Shapes come from the traced graph `gm`, weights (nonzeros) from `model` itself.
    """
    out: dict[str, dict] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        shape = node.meta["tensor_meta"].shape
        weight = module.weight
        # a conv weight is used at every output pixel of every image, a linear one at every row of its input
        uses = shape[0] * shape[2] * shape[3] if isinstance(module, nn.Conv2d) else math.prod(map(int, shape[:-1]))
        row = out.setdefault(node.target, {"macs": 0, "macs_sparse": 0})
        row["macs"] += uses * weight.numel()
        row["macs_sparse"] += uses * int((weight != 0).sum())
    return out
