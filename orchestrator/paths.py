"""Output locations checked before any work starts.

A job that cannot write its result must fail in its first second, naming the path, not after an
epoch of training (or a whole study) with a traceback. Each check creates the folder and writes
and removes a probe file, which is what the job will do: permissions, read-only mounts, a file in
the way of a folder and a full disk are all found the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .errors import OrchestratorError


def _check(p: Path, want_dir: bool, what: str, path) -> Path:
    """Create the folder `p` is (or lives in), write and remove a probe there; one error naming the path."""
    folder = p if want_dir else p.parent
    probe = folder / f".orchestrator-probe-{os.getpid()}"
    try:  # every step may raise OSError: a folder on the way we may not read, a read-only mount, a full disk
        if p.exists() and p.is_dir() != want_dir:
            raise OrchestratorError(f"{what} {path} is a file; give a folder" if want_dir
                                    else f"{what} {path} is a folder; give a file path")
        above = next((a for a in (folder, *folder.parents) if a.exists()), None)
        if above is not None and not above.is_dir():
            raise OrchestratorError(f"{what} {path}: {above} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OrchestratorError(f"{what} {path}: cannot write there ({exc.strerror or exc})") from None
    return p


def writable_file(path, what: str = "--out") -> Path:
    """`path` as a file the job can write (its folder created); else one error naming `what` and the path."""
    return _check(Path(path), False, what, path)


def writable_dir(path, what: str = "--out") -> Path:
    """`path` as a folder the job can write into (created); else one error naming `what` and the path."""
    return _check(Path(path), True, what, path)


def sqlite_file(url: str) -> Path | None:
    """The file of an `sqlite:///FILE` URL, None for other URLs."""
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def write_atomic(path, write) -> Path:
    """`write(tmp)`, then `tmp` renamed to `path`: a crash mid-write never leaves a truncated `path`. The
    temporary name is per process, since study workers share a step cache; it is removed on failure."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def read_json(path, default):
    """The JSON in `path`, `default` when there is no such file; a corrupt file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise OrchestratorError(f"{path} is not valid JSON (a partial result?); delete it to start over") from None
