"""A real compressed file: the proof that the parameter accounting is true.

Layout: magic `ORCX`, format version (1 byte), header length (4 bytes, little endian), a header, then
the payload. The header (version 2) is zlib-compressed JSON: the architecture spec, normalization and,
per tensor of the accounting, only what the rebuilt architecture cannot tell: format, bits, encoding,
index bits, nonzero and entry counts (names, shapes and stream lengths follow from the spec), and per
conv/linear layer its activation quantizer. About 340 bytes for a ResNet-20, under 2% of a 20 KB
model (version 1's plain JSON header was 8.6 KB; version 1 files still load). The payload: for each
tensor of the accounting, in order, its streams:
  scales   fp32 per output channel (quantized formats)
  mask     1 bit per element (bitmask encoding) | gaps: k bits per entry (relative-index encoding)
  values   one value per stored element: raw fp32/fp16/bf16, k-bit two's complement codes ("int"),
           or 1 sign bit ("binary")
Every stream is bit-packed and padded to a whole byte, so the payload exceeds the accounted bits by
at most 3 bytes per tensor; the header is reported separately.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..models import build_model
from ..paths import writable_file, write_atomic
from ..qformat import (FLOAT_DTYPES, SCALED_FORMATS, act_quant_of, attach_act_quant_, set_act_bits_, set_weight_spec_,
                       weight_codes, weight_spec)
from .params import parameter_rows, zero_gaps

MAGIC = b"ORCX"
VERSION = 2
ENCODINGS = ("dense", "bitmask", "relative_index")


def pack_bits(values: np.ndarray, k: int) -> bytes:
    """Little-endian bit-packing of non-negative integers < 2^k."""
    v = values.astype(np.uint64)
    bits = ((v[:, None] >> np.arange(k, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int, k: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=n * k, bitorder="little").reshape(n, k)
    return (bits.astype(np.uint64) << np.arange(k, dtype=np.uint64)).sum(1).astype(np.int64)


def _value_format(module: nn.Module | None, t: torch.Tensor) -> str:
    fmt = (weight_spec(module) or (None,))[0] if module is not None else None
    if fmt in SCALED_FORMATS:
        return fmt
    if fmt in FLOAT_DTYPES:
        return FLOAT_DTYPES[fmt]
    return {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(t.dtype, "float32")


def _encode_values(values: torch.Tensor, fmt: str, bits: int) -> bytes:
    if fmt == "float32":
        return values.float().numpy().tobytes()
    if fmt in ("float16", "bfloat16"):
        return values.to(getattr(torch, fmt)).view(torch.int16).numpy().tobytes()
    codes = values.numpy().astype(np.int64)
    if fmt == "binary":
        return pack_bits((codes > 0).astype(np.int64), 1)
    return pack_bits(codes & ((1 << bits) - 1), bits)


def _decode_values(data: bytes, n: int, fmt: str, bits: int) -> torch.Tensor:
    if fmt == "float32":
        return torch.from_numpy(np.frombuffer(data, np.float32, count=n).copy())
    if fmt in ("float16", "bfloat16"):
        raw = torch.from_numpy(np.frombuffer(data, np.int16, count=n).copy())
        return raw.view(getattr(torch, fmt)).float()
    u = unpack_bits(data, n, bits)
    if fmt == "binary":
        return torch.from_numpy(u * 2 - 1)
    return torch.from_numpy(np.where(u >= 1 << (bits - 1), u - (1 << bits), u))


def _relative_entries(flat_nz: np.ndarray, k: int):
    """(gap, owning nonzero, is-a-value flag) of every entry, fillers (value 0) included, as accounted."""
    gaps = zero_gaps(flat_nz)
    fillers = gaps >> k
    owner = np.repeat(np.arange(len(gaps)), fillers + 1)
    first = np.repeat(np.cumsum(fillers + 1) - (fillers + 1), fillers + 1)
    is_value = (np.arange(len(owner)) - first) == fillers[owner]
    entry_gaps = np.where(is_value, gaps[owner] - (fillers[owner] << k), (1 << k) - 1)
    return entry_gaps, owner, is_value


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mname, _, attr = name.rpartition(".")
    return (model.get_submodule(mname) if mname else model), attr


def export(model: nn.Module, path, *, dataset: str = "cifar10", normalization: dict | None = None) -> dict:
    """Write `model` compressed as its footprint accounts it; returns sizes in bytes."""
    if not hasattr(model, "arch"):
        raise CheckpointError(f"cannot export a {type(model).__name__}: only models built by "
                              "orchestrator.models carry the architecture spec an export needs")
    path = writable_file(path, "export file")
    rows = parameter_rows(model)
    tensors, payload = [], bytearray()  # per tensor what the architecture cannot tell (the header's compact form)
    for row in rows:
        module, attr = _resolve(model, row["name"])
        if row["kind"] == "bn":
            s = module.weight.detach() / torch.sqrt(module.running_var + module.eps)
            t = torch.stack([s, module.bias.detach() - module.running_mean * s])
        else:
            t = getattr(module, attr).detach()
        fmt = _value_format(module if row["kind"] == "weight" else None, t)
        values = weight_codes(module) if fmt in SCALED_FORMATS else t.cpu()
        flat = values.reshape(-1)
        streams = {}
        if fmt in SCALED_FORMATS:
            streams["scales"] = module.weight_scale.detach().float().cpu().numpy().tobytes()
        nz = torch.nonzero(flat, as_tuple=True)[0].numpy()
        if row["encoding"] == "bitmask":
            mask = np.zeros(flat.numel(), np.int64)
            mask[nz] = 1
            streams["mask"] = pack_bits(mask, 1)
            streams["values"] = _encode_values(flat[nz], fmt, row["bits"])
        elif row["encoding"] == "relative_index":
            gaps, owner, is_value = _relative_entries(nz, row["index_bits"])
            streams["gaps"] = pack_bits(gaps, row["index_bits"])
            vals = torch.where(torch.from_numpy(is_value), flat[nz][owner], torch.zeros((), dtype=flat.dtype))
            streams["values"] = _encode_values(vals, fmt, row["bits"])
        else:
            streams["values"] = _encode_values(flat, fmt, row["bits"])
        tensors.append([fmt, row["bits"], ENCODINGS.index(row["encoding"]), row["index_bits"], int(len(nz)),
                        int(len(gaps)) if row["encoding"] == "relative_index" else 0])
        payload += b"".join(streams.values())
    # activation quantization: bits and calibrated range per layer input (metadata, like the widths)
    acts = [[m.act_quant.bits, float(m.act_quant.max), int(m.act_quant.signed)] if act_quant_of(m) is not None else 0
            for m in _layers(model).values()]
    header = zlib.compress(json.dumps({"arch": model.arch, "widths": model.widths, "num_classes": model.num_classes,
                                       "dataset": dataset, "normalization": normalization, "tensors": tensors,
                                       **({"activations": acts} if any(acts) else {})},
                                      separators=(",", ":")).encode(), 9)
    try:
        write_atomic(path, lambda tmp: tmp.write_bytes(MAGIC + bytes([VERSION]) + struct.pack("<I", len(header))
                                                     + header + payload))
    except OSError as exc:
        raise CheckpointError(f"cannot write export file {path}: {exc.strerror or exc}") from None
    accounted = sum(r["storage_bits"] for r in rows)
    return {"file_bytes": path.stat().st_size, "header_bytes": 9 + len(header), "payload_bytes": len(payload),
            "accounted_bytes": accounted / 8}


def is_export(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def read_header(path) -> tuple[dict, bytes]:
    """The header as a mapping (version 2's compact form is expanded by `load_export`) and the payload."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise CheckpointError(f"{path} is not an orchestrator export (no {MAGIC!r} magic)")
    if len(data) < 9 or data[4] not in (1, VERSION):
        raise CheckpointError(f"{path}: export version {data[4] if len(data) > 4 else None} unsupported; "
                              f"allowed: 1, {VERSION}")
    try:
        (n,) = struct.unpack("<I", data[5:9])
        raw = data[9:9 + n]
        header = json.loads(zlib.decompress(raw) if data[4] == 2 else raw)
    except (struct.error, ValueError, zlib.error) as exc:
        raise CheckpointError(f"{path}: corrupt export header ({exc})") from None
    if not isinstance(header, dict) or not {"arch", "widths", "num_classes", "tensors"} <= set(header):
        raise CheckpointError(f"{path}: corrupt export header (not a mapping with arch, widths, num_classes, "
                              "tensors)")
    header["version"] = data[4]
    return header, data[9 + n:]


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers by name, in model order: the order of the header's activation list."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _value_bytes(fmt: str, bits: int, count: int) -> int:
    """Length of `_encode_values` for `count` values."""
    if fmt == "float32":
        return 4 * count
    if fmt in ("float16", "bfloat16"):
        return 2 * count
    return (count * (1 if fmt == "binary" else bits) + 7) // 8


def _expand(model: nn.Module, header: dict) -> None:
    """Version 2: names, kinds, shapes and stream lengths of each tensor from the rebuilt architecture."""
    rows = parameter_rows(model)
    if len(rows) != len(header["tensors"]):
        raise CheckpointError(f"corrupt export: {len(header['tensors'])} tensors for {len(rows)} in the architecture")
    entries = []
    for row, (fmt, bits, enc, index_bits, nonzero, count) in zip(rows, header["tensors"]):
        encoding, n = ENCODINGS[enc], row["numel"]
        streams = {"scales": 4 * row["shape"][0]} if fmt in SCALED_FORMATS else {}
        if encoding == "bitmask":
            streams.update(mask=(n + 7) // 8, values=_value_bytes(fmt, bits, nonzero))
        elif encoding == "relative_index":
            streams.update(gaps=(count * index_bits + 7) // 8, values=_value_bytes(fmt, bits, count))
        else:
            streams["values"] = _value_bytes(fmt, bits, n)
        entries.append({"name": row["name"], "kind": row["kind"], "shape": row["shape"], "format": fmt, "bits": bits,
                        "encoding": encoding, "index_bits": index_bits, "nonzero": nonzero, "entries": count,
                        "streams": streams})
    header["tensors"] = entries
    layers = dict(zip(_layers(model), header.get("activations", [])))
    header["activations"] = {n: {"bits": a[0], "max": a[1], "signed": bool(a[2])} for n, a in layers.items() if a}


@torch.no_grad()
def load_export(path) -> tuple[nn.Module, dict]:
    """Rebuild a runnable model (eval mode) from an export file; returns (model, header)."""
    header, payload = read_header(path)
    model = build_model(header["arch"], header["num_classes"], header["widths"]).eval()
    pos = 0
    try:
        if header["version"] == 2:
            _expand(model, header)
        for e in header["tensors"]:
            streams = {}
            for key, length in e["streams"].items():
                streams[key] = payload[pos:pos + length]
                if len(streams[key]) != length:
                    raise CheckpointError(f"{path} is truncated (tensor {e['name']})")
                pos += length
            _restore(model, e, streams)
        for name, a in header.get("activations", {}).items():
            q = attach_act_quant_(model.get_submodule(name), a["bits"])
            q.max.fill_(a["max"])
            q.signed.fill_(a["signed"])
        set_act_bits_(model)
    except (KeyError, ValueError, RuntimeError, AttributeError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path}: corrupt export ({type(exc).__name__}: {exc})") from None
    return model.eval(), header


def _restore(model: nn.Module, e: dict, streams: dict) -> None:
    n = int(np.prod(e["shape"]))
    fmt, bits = e["format"], e["bits"]
    if e["encoding"] == "bitmask":
        positions = np.flatnonzero(unpack_bits(streams["mask"], n, 1))
        vals = _decode_values(streams["values"], len(positions), fmt, bits)
    elif e["encoding"] == "relative_index":
        gaps = unpack_bits(streams["gaps"], e["entries"], e["index_bits"])
        positions = np.cumsum(gaps + 1) - 1
        vals = _decode_values(streams["values"], e["entries"], fmt, bits)
    else:
        positions = np.arange(n)
        vals = _decode_values(streams["values"], n, fmt, bits)
    flat = torch.zeros(n, dtype=vals.dtype)
    flat[torch.from_numpy(positions)] = vals
    if int(torch.count_nonzero(flat)) != e["nonzero"]:  # the header's count is what the footprint reads
        raise CheckpointError(f"corrupt export: tensor {e['name']} holds {int(torch.count_nonzero(flat)):,} nonzero "
                              f"values, its header says {e['nonzero']:,}")
    t = flat.reshape(e["shape"])
    module, attr = _resolve(model, e["name"])
    if e["kind"] == "bn":  # folded: y = x * scale + shift
        module.weight.copy_(t[0])
        module.bias.copy_(t[1])
        module.running_mean.zero_()
        module.running_var.fill_(1.0)
        module.eps = 0.0
        return
    if fmt in SCALED_FORMATS:
        scale = torch.from_numpy(np.frombuffer(streams["scales"], np.float32).copy())
        shaped = scale.view(-1, *([1] * (t.dim() - 1)))
        t = (t.float() * shaped).reshape(e["shape"])
        set_weight_spec_(module, fmt, bits, scale)
    elif fmt in FLOAT_DTYPES.values() and e["kind"] == "weight":
        set_weight_spec_(module, next(k for k, v in FLOAT_DTYPES.items() if v == fmt), 16)
    getattr(module, attr).copy_(t.float())
