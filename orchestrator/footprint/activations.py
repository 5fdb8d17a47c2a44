"""Activation memory of one inference: peak of live feature maps, by tensor liveness on the fx graph.

A meta-device copy of the model is traced with torch.fx to get every tensor's shape (no arithmetic). Each
buffer lives from the node that writes it to its last reader, so a residual input kept for the
skip connection is counted until the add, and a freed map is not. Rules (those of a memory-planning
inference runtime, stated so the numbers can be checked by hand):
- the input image counts (it is live until the first layer has read it);
- views (flatten, reshape, slicing, ...) share their input's buffer;
- an elementwise op (BN, ReLU/ReLU6, add, mul, dropout) writes into an input buffer of the same
  shape whose last reader it is (BN folded, in-place activations); otherwise it allocates.
- each buffer is stored at `bits`; in a mixed-precision model (layers whose activation quantizers
  differ) a buffer is stored at the largest bit-width of the quantized layers that read it, `bits`
  when none does (a boundary map read at 4 and 8 bits costs 8).
Also reported: the sum of all feature maps (ShrinkBench's convention) and the largest single layer's
input + output (the per-layer IFM/OFM convention of Distiller), each named.
"""

from __future__ import annotations

import copy
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import OrchestratorError
from ..qformat import ActBits, act_quant_of
from ..values import check

VIEW_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem}
VIEW_METHODS = {"view", "flatten", "reshape", "squeeze", "unsqueeze", "contiguous", "view_as", "expand"}
ELEMENTWISE_FUNCS = {F.relu, F.relu6, torch.relu, operator.add, operator.mul, torch.add, torch.mul,
                     F.dropout, torch.sigmoid, F.hardtanh, F.silu, operator.iadd}
ELEMENTWISE_METHODS = {"relu", "relu_", "add", "add_", "mul", "mul_", "sigmoid", "clamp"}
ELEMENTWISE_MODULES = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Dropout,
                       nn.Identity, nn.SiLU, nn.Sigmoid)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose tensors live on the meta device: structure and shapes, no data."""
    memo: dict[int, torch.Tensor] = {}
    for m in model.modules():
        for value in [*m._parameters.values(), *m._buffers.values(), *vars(m).values()]:
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                meta = torch.empty_like(value, device="meta")
                memo[id(value)] = nn.Parameter(meta, value.requires_grad) if isinstance(value, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def trace(model: nn.Module, batch: int = 1) -> fx.GraphModule:
    """fx graph of a meta-device copy of `model`, every node annotated with its output shape.

    No arithmetic is done (fast on any model), and hooks such as those of torch.nn.utils.prune
    run on the copy, never on the caller's model.
    """
    try:
        gm = fx.symbolic_trace(_meta_copy(model).eval())
    except Exception as exc:
        raise OrchestratorError(f"cannot trace {type(model).__name__} with torch.fx ({exc})") from None
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(batch, 3, 32, 32, device="meta"))
    return gm


def _numel(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return math.prod(map(int, meta.shape))


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """'view', 'elementwise' or 'alloc'."""
    if node.op == "call_module":
        return "elementwise" if isinstance(gm.get_submodule(node.target), ELEMENTWISE_MODULES) else "alloc"
    views, elementwise = {"call_function": (VIEW_FUNCS, ELEMENTWISE_FUNCS),
                          "call_method": (VIEW_METHODS, ELEMENTWISE_METHODS)}.get(node.op, ((), ()))
    if node.target in views:
        return "view"
    return "elementwise" if node.target in elementwise else "alloc"


def check_inputs(batch, bits) -> None:
    """Batch size and activation bit-width as the footprint accepts them."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OrchestratorError(f"batch={batch!r} must be an integer >= 1")
    check(ActBits, bits, "act_bits")  # the one rule of activation bits (32: float maps)


def buffer_bits(model: nn.Module, gm: fx.GraphModule, root: dict, bits: int) -> dict[fx.Node, int]:
    """Bits per stored value of each buffer: `bits`, or in a mixed model the widest quantized reader's."""
    quants = {n: q.bits for n, m in model.named_modules() if (q := act_quant_of(m)) is not None}  # layer -> input bits
    buffers = set(root.values())
    if len(set(quants.values())) <= 1:
        return dict.fromkeys(buffers, bits)
    read: dict[fx.Node, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and n.target in quants:
            for a in n.all_input_nodes:
                if a in root:
                    read[root[a]] = max(read.get(root[a], 0), quants[n.target])
    return {r: read.get(r, bits) for r in buffers}


def activation_report(model: nn.Module, batch: int = 1, bits: int = 32, gm: fx.GraphModule | None = None,
                      mixed: bool = True) -> dict:
    """Peak live activation bits at inference, plus the conventions the literature uses.

    `mixed=False` stores every map at `bits`, ignoring the layers' own activation quantizers."""
    check_inputs(batch, bits)
    gm = gm if gm is not None else trace(model, batch)
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    root: dict[fx.Node, fx.Node] = {}  # node -> the node that allocated the buffer it lives in
    size: dict[fx.Node, int] = {}  # buffer (its allocating node) -> elements
    last_use: dict[fx.Node, int] = {}  # buffer -> index of its last reader
    tensor_inputs: dict[fx.Node, list[fx.Node]] = {}
    for n in nodes:
        numel = _numel(n)
        tensor_inputs[n] = [a for a in n.all_input_nodes if a in root]
        if numel is None or n.op == "output":
            continue
        kind, ins = _kind(gm, n), tensor_inputs[n]
        root[n] = n
        if kind == "view" and ins:
            root[n] = root[ins[0]]
        elif kind == "elementwise":
            # overwrite an input buffer of the same size that nobody reads after this node
            reusable = [a for a in ins if size[root[a]] == numel and last_use[root[a]] == index[n]]
            if reusable:
                root[n] = root[reusable[0]]
        r = root[n]
        size.setdefault(r, numel)
        last_use[r] = max(last_use.get(r, index[n]), max((index[u] for u in n.users), default=index[n]))
    for a in nodes[-1].all_input_nodes:  # the model's outputs stay live to the end
        if a in root:
            last_use[root[a]] = len(nodes)
    width = buffer_bits(model, gm, root, bits) if mixed else dict.fromkeys(set(root.values()), bits)
    birth = {r: index[r] for r in size}
    peak, peak_at, timeline = -1, nodes[0], []
    for n in nodes:
        i = index[n]
        live = sum(size[r] * width[r] for r in size if birth[r] <= i <= last_use[r])
        timeline.append((n.name, live))
        if live > peak:
            peak, peak_at = live, n
    at_peak = [r for r in size if birth[r] <= index[peak_at] <= last_use[r]]
    layers = []
    for n in nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), (nn.Conv2d, nn.Linear)):
            ins = sum(_numel(a) * width[root[a]] for a in tensor_inputs[n])
            layers.append((ins + _numel(n) * width[root[n]], n.target))
    largest = max(layers, default=(0, ""))
    return {"batch": batch, "bits": bits,
            "peak_bits": peak, "peak_elements": sum(size[r] for r in at_peak), "peak_at": peak_at.name,
            "live_at_peak": sorted(r.name for r in at_peak),
            "sum_bits": sum(size[r] * width[r] for r in size),
            "largest_layer_bits": largest[0], "largest_layer": largest[1],
            "timeline": timeline}  # (graph node, live activation bits while it runs), in execution order
