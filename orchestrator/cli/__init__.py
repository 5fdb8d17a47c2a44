"""Command line: parses options, builds configs, calls the library. No logic of its own.

The `main` group and the shared options live in `common`; each command module registers its commands
on it: `basics` (train, eval, models, footprint, export, import, data), `compress` (prune, sweep,
sensitivity), `pipelines` (pipeline, quantize, distill), `studies` (study ...).
"""

from . import basics, compress, pipelines, studies  # noqa: F401  (register their commands on main)
from .common import main

__all__ = ["main"]
