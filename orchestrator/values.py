"""The value types every layer shares: one rule per quantity, so a value is validated once (in a config, a
search space, a CLI option or a primitive's argument) and logged everywhere in one encoding.

- `Ratio`: fraction of weights (or channels) removed, [0, 1).
- `Epochs`: training epochs, fractions allowed (0.25: a quarter of the training split), >= 0.
- `IntBits`: bits of an integer code (weights or activations), 2..16.
- `WeightBits`: a weight precision as bits per stored value, the encoding of search spaces, MLflow and the
  CLI: 32 float (fp32), 16 fp16, 2..8 int, 1 binary. `precision_format` and `precision_bits` convert it
  to and from a quantization config's (format, bits).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, TypeAdapter, ValidationError

from .errors import OrchestratorError

Ratio = Annotated[float, Field(ge=0, lt=1)]  # fraction removed
Epochs = Annotated[int | float, Field(ge=0, le=100_000)]  # epochs; fractions of an epoch allowed (0: none)
IntBits = Annotated[StrictInt, Field(ge=2, le=16)]  # integer code bits

WEIGHT_BITS = (32, 16, *range(8, 1, -1), 1)  # allowed weight precisions, widest first


def _weight_bits(v: int) -> int:
    if v not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be 32 (float), 16 (fp16), 2..8 (int) or 1 (binary), got {v}")
    return v


WeightBits = Annotated[StrictInt, AfterValidator(_weight_bits)]


def _act_bits(v: int) -> int:
    if v != 32 and not 2 <= v <= 16:
        raise ValueError(f"activation bits must be 32 (float) or 2..16, got {v}")
    return v


ActBits = Annotated[StrictInt, AfterValidator(_act_bits)]  # activation bits; 32: float (search spaces)


def precision_format(bits: int) -> dict:
    """A quantization config's weight format for a weight precision: {'format': ..., 'bits': ...}."""
    return {1: {"format": "binary"}, 16: {"format": "fp16"}, 32: {"format": "fp32"}}.get(
        bits, {"format": "int", "bits": bits})


def precision_bits(fmt: str, bits: int | None = None) -> int:
    """The weight precision of a (format, bits): the inverse of `precision_format` (bf16 counts as 16)."""
    return {"binary": 1, "fp16": 16, "bf16": 16, "fp32": 32}.get(fmt, bits)


_ALLOWED = {Ratio: "a number in [0, 1)", Epochs: "epochs >= 0 (fractions allowed)", IntBits: "integers 2..16",
            WeightBits: "32, 16, 2..8 or 1"}
_ADAPTERS: dict[Any, TypeAdapter] = {}


def check(kind, value, name: str):
    """`value` validated as `kind` (one of the types above), else a one-line error naming it and what is allowed.

    Bools are numbers to Python, never to a config: they are refused.
    """
    adapter = _ADAPTERS.get(kind)
    if adapter is None:  # built once per type: `setdefault(kind, TypeAdapter(kind))` built one on every call
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    try:
        if isinstance(value, bool):
            raise ValueError
        return adapter.validate_python(value)
    except (ValidationError, ValueError):
        raise OrchestratorError(f"{name}={value!r} is not allowed; allowed: {_ALLOWED[kind]}") from None


__all__ = ["ActBits", "Epochs", "IntBits", "Ratio", "WEIGHT_BITS", "WeightBits", "check", "precision_bits", "precision_format"]
