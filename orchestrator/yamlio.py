"""Reading user YAML files: unreadable, malformed or non-mapping files are one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

from .errors import OrchestratorError


def read_mapping(path, what: str) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OrchestratorError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OrchestratorError(f"{what} {path} must hold a mapping of config keys")
    return raw
