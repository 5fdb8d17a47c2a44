"""What a study checks before it opens or spends anything, and which failures stop it.

Preflight reads the base and the data and probes every output (trial files, an SQLite storage, an
MLflow store or server) so a bad path or a dead server is one line before trial 0, not a traceback
after it. `environmental` tells a failure of the machine from one of the trial's configuration.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError, DataError, OrchestratorError
from ..paths import sqlite_file, writable_dir, writable_file
from .space import SearchSpace

DEFAULT_STORAGE = "sqlite:///runs/studies.db"


def environmental(exc: BaseException) -> bool:
    """A failure of the machine or its files (missing data, unreadable base, full disk, lost server),
    not of the trial's configuration: it stops the study and costs no budget."""
    out_of_memory = isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
    return out_of_memory or isinstance(exc, (OSError, MemoryError, DataError, CheckpointError)) or \
        type(exc).__module__.startswith(("mlflow", "sqlalchemy", "psycopg"))


def preflight(space: SearchSpace, data_dir, out_dir="runs/studies", storage: str = DEFAULT_STORAGE,
              tracking_uri: str | None = None) -> list[dict]:
    """What every trial needs, checked before the study opens or spends anything: a readable base whose
    layer groups the space names, a valid data directory, writable outputs (trial files, an SQLite
    storage) and a reachable MLflow server. Returns the splits trials use (name, split, size, content
    hash), which each trial's MLflow run records as its dataset inputs."""
    from ..checkpoint import load_model
    from ..data import load_split, resolve_data_dir, split_validation

    writable_dir(Path(out_dir) / space.name, "--out")
    if storage_file := sqlite_file(storage):
        writable_file(storage_file, "--storage")
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        writable_file(sqlite_file(tracking_uri), "--mlflow")
    elif tracking_uri and tracking_uri.startswith(("http://", "https://")):
        check_server(tracking_uri)
    model, ckpt = load_model(space.base)
    space.check_base(model)
    test = load_split(ckpt.dataset, "test", data_dir)
    train = load_split(ckpt.dataset, "train", data_dir)
    splits = dict(zip(("train", "validation"), split_validation(train, space.val_size))) if space.val_size \
        else {"train": train}
    splits["test"] = test
    source = str(resolve_data_dir(data_dir).resolve())
    return [{"name": ckpt.dataset, "split": k, "size": len(v), "digest": v.digest(), "source": source}
            for k, v in splits.items()]


def check_server(uri: str, timeout: float = 5.0) -> None:
    """An MLflow server answers its health check within `timeout` seconds (MLflow's own client retries an
    unreachable server for minutes before it gives up)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OrchestratorError(f"--mlflow {uri}: no MLflow server answers there ({reason}); start one "
                                "(mlflow server) or give a local store, e.g. sqlite:///mlflow.db") from None


__all__ = ["DEFAULT_STORAGE", "check_server", "environmental", "preflight"]
