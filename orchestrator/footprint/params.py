"""Parameter storage in bits: every tensor inference needs, at its real bit-width, in its cheapest encoding.

What is counted (stated once, used everywhere):
- conv/linear weights and biases, read as *effective* tensors (`module.weight`, which under
  `torch.nn.utils.prune` is `weight_orig * weight_mask`), never `parameters()`;
- batch norm as the two per-channel vectors inference needs (scale and shift, the running
  statistics folded in), so a dense fp32 CIFAR ResNet costs exactly its published parameter count
  x 32 bits;
- quantized tensors at `module.weight_bits` bits per value, plus their per-channel scales (32 bits each)
  and zero-points (`weight_zero_bits` each, 0 for symmetric schemes).

Sparse encodings (the cheapest valid one is chosen and named):
- dense: n * b
- bitmask: n * 1 + nnz * b (MicroNet's rule)
- relative indices (Deep Compression): each nonzero stores its value and a k-bit gap to the previous
  one; gaps longer than 2^k - 1 insert filler entries (zeros), k chosen in 1..16 to minimize the size
  (1-bit values cannot hold a filler's zero: only k without fillers qualify).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..qformat import weight_spec

SCALE_BITS = 32  # each per-channel scale is stored as fp32
MAX_INDEX_BITS = 16

DTYPE_BITS = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16, torch.float64: 64,
              torch.int8: 8, torch.uint8: 8}


def dtype_bits(t: torch.Tensor) -> int:
    return DTYPE_BITS.get(t.dtype, t.element_size() * 8)


def zero_gaps(flat_nonzero: np.ndarray) -> np.ndarray:
    """Zeros skipped before each nonzero, given the sorted flat positions of the nonzeros."""
    return np.diff(flat_nonzero, prepend=-1) - 1


def relative_index_cost(gaps: np.ndarray, value_bits: int, k: int) -> tuple[int, int]:
    """(bits, filler entries) to store the nonzeros with k-bit relative indices."""
    fillers = int((gaps >> k).sum())  # a gap of g zeros needs g // 2^k fillers
    return (len(gaps) + fillers) * (value_bits + k), fillers


def encode_costs(t: torch.Tensor, value_bits: int) -> dict[str, dict]:
    """Size in bits of tensor `t` under each valid encoding (no scales included)."""
    flat = t.detach().reshape(-1).cpu()
    n = flat.numel()
    gaps = zero_gaps(torch.nonzero(flat, as_tuple=True)[0].numpy())
    nnz = len(gaps)
    costs: dict[str, dict] = {}
    if value_bits > 1 or nnz == n:  # 1-bit values are +-scale: they cannot store a zero densely
        costs["dense"] = {"bits": n * value_bits}
    costs["bitmask"] = {"bits": n + nnz * value_bits}
    options = [relative_index_cost(gaps, value_bits, k) + (k,) for k in range(1, MAX_INDEX_BITS + 1)]
    if value_bits == 1:  # a filler holds a zero, which 1-bit (+-scale) values cannot
        options = [o for o in options if o[1] == 0]
    if options:
        best = min(options, key=lambda c: c[0])
        costs["relative_index"] = {"bits": best[0], "index_bits": best[2], "fillers": best[1]}
    return costs


def tensor_row(name: str, t: torch.Tensor, bits: int, scales: int = 0, zero_bits: int = 0,
               kind: str = "weight") -> dict:
    """One row of the per-tensor table, with the cheapest encoding chosen."""
    costs = encode_costs(t, bits)
    encoding = min(costs, key=lambda k: (costs[k]["bits"], k != "dense"))
    overhead = scales * (SCALE_BITS + zero_bits)
    return {"name": name, "kind": kind, "shape": list(t.shape), "numel": t.numel(),
            "nonzero": int(torch.count_nonzero(t)), "bits": bits, "scales": scales,
            "encoding": encoding, "index_bits": costs[encoding].get("index_bits", 0),
            "storage_bits": costs[encoding]["bits"] + overhead,
            "dense_bits": t.numel() * bits + overhead}


def _quant_attrs(module: nn.Module, t: torch.Tensor) -> tuple[int, int, int]:
    spec = weight_spec(module)
    if spec is None:
        return dtype_bits(t), 0, 0
    bits, scale = spec[1], getattr(module, "weight_scale", None)
    return int(bits), (0 if scale is None else scale.numel()), int(getattr(module, "weight_zero_bits", 0))


def parameter_rows(model: nn.Module) -> list[dict]:
    """Per-tensor accounting of everything `model` needs at inference."""
    rows = []
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight  # effective weight: masked under torch.nn.utils.prune
            bits, scales, zero_bits = _quant_attrs(module, weight)
            rows.append(tensor_row(prefix + "weight", weight, bits, scales, zero_bits))
            if module.bias is not None:
                rows.append(tensor_row(prefix + "bias", module.bias, dtype_bits(module.bias), kind="bias"))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            ref = module.weight if module.weight is not None else module.running_mean
            folded = torch.ones(2, c)  # scale and shift after folding; zeros are not exploited
            rows.append(tensor_row(prefix + "scale_shift", folded, dtype_bits(ref), kind="bn"))
        elif not list(module.children()):
            for pname, p in module.named_parameters(recurse=False):
                rows.append(tensor_row(prefix + pname, p, dtype_bits(p), kind="other"))
    return rows
