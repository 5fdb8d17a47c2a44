"""The value types every layer shares: one rule per quantity, so a value is validated once (in a config, a
search space, a CLI option or a primitive's argument) and logged everywhere in one encoding.

- `Ratio`: fraction of weights (or channels) removed, [0, 1).
- `Epochs`: training epochs, fractions allowed (0.25: a quarter of the training split), >= 0.
- `WeightBits`: a weight precision as bits per stored value, the encoding of search spaces, MLflow and the
  CLI: 32 float (fp32), 16 fp16, 2..8 int, 1 binary. `precision_format` and `precision_bits` convert it
  to and from a quantization config's (format, bits). `IntWeightBits`: its integer codes (2..8), what an
  "int" weight format takes, so every weight precision a config can give a study can search.
- `ActBits`: activation bits, 2..16, or 32 for float maps (search spaces); `ActIntBits`: the quantized ones
  alone (configs, where float is None).
Each set of values is written once, here (`INT_WEIGHT_BITS`, `WEIGHT_BITS`, `ACT_INT_BITS`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, TypeAdapter, ValidationError

from .errors import OrchestratorError

Ratio = Annotated[float, Field(ge=0, lt=1)]  # fraction removed
Epochs = Annotated[int | float, Field(ge=0, le=100_000)]  # epochs; fractions of an epoch allowed (0: none)
INT_WEIGHT_BITS = tuple(range(8, 1, -1))  # integer weight codes, widest first
WEIGHT_BITS = (32, 16, *INT_WEIGHT_BITS, 1)  # every weight precision: fp32, fp16, int, binary
ACT_INT_BITS = tuple(range(16, 1, -1))  # quantized activation maps
FLOAT = 32  # float maps (and fp32 weights) in the shared encoding
ACT_BITS = (FLOAT, *ACT_INT_BITS)
_ALLOWED: dict[Any, str] = {Ratio: "a number in [0, 1)", Epochs: "epochs >= 0 (fractions allowed)"}  # per type


def _one_of(values: tuple, what: str, allowed: str):
    """An int type whose values are `values`, described as `allowed` in every error (`check` included)."""
    def validate(v: int) -> int:
        if v not in values:
            raise ValueError(f"{what} must be {allowed}, got {v}")
        return v
    kind = Annotated[StrictInt, AfterValidator(validate)]
    _ALLOWED[kind] = allowed
    return kind


IntWeightBits = _one_of(INT_WEIGHT_BITS, "int weight bits", "integers 2..8")
WeightBits = _one_of(WEIGHT_BITS, "weight bits", "32 (float), 16 (fp16), 2..8 (int) or 1 (binary)")
ActIntBits = _one_of(ACT_INT_BITS, "activation bits", "integers 2..16")
ActBits = _one_of(ACT_BITS, "activation bits", "32 (float) or 2..16")  # 32: float (search spaces)


def precision_format(bits: int) -> dict:
    """A quantization config's weight format for a weight precision: {'format': ..., 'bits': ...}."""
    return {1: {"format": "binary"}, 16: {"format": "fp16"}, 32: {"format": "fp32"}}.get(
        bits, {"format": "int", "bits": bits})


def precision_bits(fmt: str, bits: int | None = None) -> int:
    """The weight precision of a (format, bits): the inverse of `precision_format` (bf16 counts as 16)."""
    return {"binary": 1, "fp16": 16, "bf16": 16, "fp32": 32}.get(fmt, bits)


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


__all__ = ["ACT_BITS", "ACT_INT_BITS", "ActBits", "ActIntBits", "Epochs", "FLOAT", "INT_WEIGHT_BITS", "IntWeightBits",
           "Ratio", "WEIGHT_BITS", "WeightBits", "check", "precision_bits", "precision_format"]
