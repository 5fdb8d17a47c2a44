"""The value types every layer shares: one rule per quantity, so a value is validated once (in a config, a
search space, a CLI option or a primitive's argument) and logged everywhere in one encoding.

- `Ratio`: fraction of weights (or channels) removed, [0, 1).
- `Epochs`: training epochs, fractions allowed (0.25: a quarter of the training split), >= 0.
Precision (weight and activation bits) lives with the formats that define it: `qformat.WeightBits`, `ActBits`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, TypeAdapter, ValidationError

from .errors import OrchestratorError

Ratio = Annotated[float, Field(ge=0, lt=1)]  # fraction removed
Epochs = Annotated[int | float, Field(ge=0, le=100_000)]  # epochs; fractions of an epoch allowed (0: none)
_ALLOWED: dict[Any, str] = {Ratio: "a number in [0, 1)", Epochs: "epochs >= 0 (fractions allowed)"}  # per type


def one_of(values: tuple, what: str, allowed: str):
    """An int type whose values are `values`, described as `allowed` in every error (`check` included)."""
    def validate(v: int) -> int:
        if v not in values:
            raise ValueError(f"{what} must be {allowed}, got {v}")
        return v
    kind = Annotated[StrictInt, AfterValidator(validate)]
    _ALLOWED[kind] = allowed
    return kind


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


__all__ = ["Epochs", "Ratio", "check", "one_of"]
