"""Memory footprint: parameter storage (bits, sparse encodings) + peak activations, MACs, MicroNet score.

`measure(model)` returns a `Footprint` (pydantic, JSON-serializable); `export`/`load_export` in
`footprint.export` write and read a real compressed file whose size proves the accounting.
"""

from __future__ import annotations

from pydantic import BaseModel
from torch import nn

from ..errors import OrchestratorError
from .activations import activation_report, check_inputs, trace
from .ops import layer_macs
from .params import parameter_rows

# MicroNet challenge (NeurIPS 2019) reference: WideResNet-28-10 on CIFAR-100.
MICRONET_PARAMS = 36.5e6
MICRONET_OPS = 10.49e9


class TensorRow(BaseModel):
    name: str
    kind: str  # weight, bias, bn (folded scale+shift), other
    shape: list[int]
    numel: int
    nonzero: int
    bits: int  # bits per stored value
    scales: int  # fp32 per-channel scales stored with the tensor
    encoding: str  # dense, bitmask or relative_index: the cheapest valid one
    index_bits: int  # k of the relative-index encoding (0 otherwise)
    storage_bits: int  # bits in the chosen encoding, scales included
    dense_bits: int  # bits if stored densely, scales included
    macs: int = 0
    macs_sparse: int = 0


class Footprint(BaseModel):
    arch: str | None = None
    params: int  # values stored (all tensors counted)
    nonzero: int
    param_bits: int  # storage in the chosen encodings
    dense_param_bits: int
    batch: int
    act_bits: int  # bits per activation value
    activation_peak_bits: int
    activation_peak_at: str
    activation_live_at_peak: list[str]
    activation_sum_bits: int
    largest_layer: str
    largest_layer_bits: int  # that layer's input + output
    total_bits: int  # param_bits + activation_peak_bits
    macs: int
    macs_sparse: int
    micronet_score: float
    tensors: list[TensorRow]


def measure(model: nn.Module, batch: int = 1, act_bits: int | None = None) -> Footprint:
    """Footprint of `model` for one inference of `batch` images with `act_bits`-bit activations.

    `act_bits` defaults to the model's own (`model.act_bits`, set by activation quantization), else 32;
    with the default, a model whose layers quantize activations to different bits is accounted map by map.
    """
    mixed = act_bits is None
    act_bits = getattr(model, "act_bits", 32) if act_bits is None else act_bits
    check_inputs(batch, act_bits)
    rows = parameter_rows(model)
    if not rows:
        raise OrchestratorError(f"{type(model).__name__} has no parameters to account for")
    gm = trace(model, batch)
    act = activation_report(model, batch, act_bits, gm, mixed)
    macs = layer_macs(gm, model)
    # a weight row gets its layer's MACs (the module is the row's name without its last part)
    tensors = [TensorRow(**row, **(macs.get(row["name"].rpartition(".")[0], {}) if row["kind"] == "weight" else {}))
               for row in rows]
    param_bits = sum(t.storage_bits for t in tensors)
    ops = sum(t.macs_sparse * (max(t.bits, act_bits) / 32 + 1) for t in tensors)  # mul at its bits, add at 32
    return Footprint(
        arch=getattr(model, "arch", None), params=sum(t.numel for t in tensors),
        nonzero=sum(t.nonzero for t in tensors), param_bits=param_bits,
        dense_param_bits=sum(t.dense_bits for t in tensors), batch=batch, act_bits=act_bits,
        activation_peak_bits=act["peak_bits"], activation_peak_at=act["peak_at"],
        activation_live_at_peak=act["live_at_peak"], activation_sum_bits=act["sum_bits"],
        largest_layer=act["largest_layer"], largest_layer_bits=act["largest_layer_bits"],
        total_bits=param_bits + act["peak_bits"], macs=sum(t.macs for t in tensors),
        macs_sparse=sum(t.macs_sparse for t in tensors),
        micronet_score=param_bits / 32 / MICRONET_PARAMS + ops / MICRONET_OPS / batch,
        tensors=tensors)


def _kb(bits: int) -> str:
    return f"{bits / 8 / 1024:,.1f} KiB"


def format_report(fp: Footprint, per_layer: bool = True) -> str:
    """Totals and (optionally) the per-tensor table, as plain text."""
    lines = []
    if per_layer:
        lines.append(f"{'tensor':<28} {'shape':<16} {'nonzero':>9} {'numel':>9} {'bits':>4} "
                     f"{'encoding':<15} {'storage':>12} {'MACs':>11}")
        for t in fp.tensors:
            enc = t.encoding + (f"/{t.index_bits}" if t.index_bits else "")
            lines.append(f"{t.name:<28} {'x'.join(map(str, t.shape)):<16} {t.nonzero:>9,} {t.numel:>9,} "
                         f"{t.bits:>4} {enc:<15} {_kb(t.storage_bits):>12} {t.macs_sparse:>11,}")
        lines.append("")
    lines += [
        f"model: {fp.arch or '?'}",
        f"parameters: {fp.params:,} values, {fp.nonzero:,} nonzero ({100 * fp.nonzero / max(1, fp.params):.1f}%)",
        f"parameter storage: {fp.param_bits:,} bits = {_kb(fp.param_bits)} (dense: {_kb(fp.dense_param_bits)})",
        f"activations (batch {fp.batch}, {fp.act_bits}-bit): peak {_kb(fp.activation_peak_bits)} at "
        f"{fp.activation_peak_at}; sum of all maps {_kb(fp.activation_sum_bits)}; largest layer in+out "
        f"{_kb(fp.largest_layer_bits)} ({fp.largest_layer})",
        f"total footprint (parameters + peak activations): {fp.total_bits:,} bits = {_kb(fp.total_bits)}",
        f"MACs: {fp.macs:,} dense, {fp.macs_sparse:,} sparse; MicroNet score {fp.micronet_score:.5f}",
    ]
    return "\n".join(lines)
