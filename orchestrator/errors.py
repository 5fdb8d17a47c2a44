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


UNION_TAGS: set[str] = set()  # tags of discriminated unions (pruning method names): pydantic puts them in an
# error's location, where the user never wrote them


def describe_validation(exc, what: str = "config") -> str:
    """One line for a pydantic ValidationError: the key as the user wrote it (no pydantic-internal union
    or validator names in the path), the reason, and the value when it is short."""
    errors = exc.errors()
    # a typo explains the rest; else the deepest location: of a union's members, the one that got furthest
    err = next((e for e in errors if e["type"] == "extra_forbidden"), None) or max(errors, key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
    loc = []
    for p in map(str, err["loc"]):
        internal = any(c in p for c in "[(") or p.startswith("constrained-") or p in UNION_TAGS
        if p.isdigit() or not (internal or (loc and loc[-1] == p)):
            loc.append(p)  # a step's key repeats (its tag, then its field): once
    key = ".".join(loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r} in the {what} (a typo?)"
    if err["type"] == "missing":
        return f"{what} lacks the key {key!r}" if key else f"{what}: {msg}"
    value = repr(err.get("input"))
    shown = f" (got {value})" if "input" in err and len(value) <= 80 and f"got {value}" not in msg else ""
    return f"invalid value for {key!r}: {msg}{shown}" if key else f"invalid {what}: {msg}"
