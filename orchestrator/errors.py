"""User-facing errors: one clear line that names the bad value and what is allowed.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class OrchestratorError(Exception):
    """Base class for errors caused by user input (files, options, configs)."""


class DataError(OrchestratorError):
    """A dataset folder is missing, incomplete or invalid."""


class CheckpointError(OrchestratorError):
    """A checkpoint file is unreadable, foreign or inconsistent."""


class ModelSpecError(OrchestratorError):
    """An architecture name or width spec is not valid."""


def describe_validation(exc, what: str = "config") -> str:
    """One line for a pydantic ValidationError: the key as the user wrote it (no pydantic-internal union
    or validator names in the path), the reason, and the value when it is short."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
    loc = [str(p) for p in err["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[(")]
    key = ".".join(loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r} in the {what} (a typo?)"
    if err["type"] == "missing":
        return f"{what} lacks the key {key!r}" if key else f"{what}: {msg}"
    value = repr(err.get("input"))
    shown = f" (got {value})" if "input" in err and len(value) <= 80 else ""
    return f"invalid value for {key!r}: {msg}{shown}" if key else f"invalid {what}: {msg}"
