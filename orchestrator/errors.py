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
