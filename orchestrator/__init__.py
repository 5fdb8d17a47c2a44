"""orchestrator: the best CIFAR accuracy for the smallest memory footprint.

The library is import-safe (no work at import time); the CLI lives in `orchestrator.cli`.
"""

__version__ = "0.1.0"
