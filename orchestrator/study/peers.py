"""Peer points (other tools on the study's own base, from `benchmarks/peers.py`) beside the study's front.

A peers file holds one JSON object per line: `point`, `tool`, `val_acc`, `test_acc`, `total_bits` (this
product's footprint of the peer's model) and `cpu_minutes`, with one `point: base` row. That row must be the
study's own base, measured to the bit: a peer measured on another base cannot share the plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import OrchestratorError

KEYS = ("point", "tool", "val_acc", "test_acc", "total_bits", "cpu_minutes")
PEER_MARKERS = "sDP^vXh<>p"  # one marker shape per tool (plots), in the order the tools first appear


def by_tool(peers: list[dict]) -> dict[str, list[dict]]:
    out: dict = {}
    for p in peers:
        out.setdefault(p["tool"], []).append(p)
    return out


def _number(v, top: float | None) -> bool:
    """A finite number >= 0 (and <= `top`): not a bool, a string, NaN, infinity or an integer past float range."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        f = float(v)
    except OverflowError:
        return False
    return math.isfinite(f) and f >= 0 and (top is None or f <= top)


def load_peers(path, base_footprint_bytes: float, base_test_acc: float | None) -> list[dict]:
    """The peer rows of `path` (the base row left out), each with `footprint_bytes` and `compression` against
    the study's base; one-line errors for a missing file, a bad line or another base."""
    path = Path(path)
    try:
        lines = [s for s in path.read_text().splitlines() if s.strip()]
    except OSError as exc:
        raise OrchestratorError(f"--peers {path}: cannot read it ({exc.strerror or exc})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            missing = [k for k in KEYS if k not in row] if isinstance(row, dict) else list(KEYS)
        except ValueError:  # JSONDecodeError, or an integer too long to parse
            raise OrchestratorError(f"--peers {path}: line {i} is not JSON (a peers file is what "
                                    f"benchmarks/peers.py writes: one JSON object per line)") from None
        if missing:
            raise OrchestratorError(f"--peers {path}: line {i} lacks {', '.join(missing)} (needs {', '.join(KEYS)})")
        if not all(isinstance(row[k], str) and row[k] for k in KEYS[:2]):
            raise OrchestratorError(f"--peers {path}: line {i} has point={row['point']!r}, tool={row['tool']!r}; "
                                    f"allowed: non-empty strings")
        bad = [k for k in KEYS[2:] if not _number(row[k], 1.0 if k.endswith("_acc") else None)]
        if bad or row["total_bits"] == 0:
            raise OrchestratorError(f"--peers {path}: line {i} has {bad[0] if bad else 'total_bits'}="
                                    f"{row[bad[0] if bad else 'total_bits']!r}; allowed: a finite number >= 0 "
                                    f"(accuracies a fraction <= 1, total_bits > 0)")
        rows.append(row)
    base = next((r for r in rows if r["point"] == "base"), None)
    if base is None:
        raise OrchestratorError(f"--peers {path}: no 'base' row, so nothing shows the peers ran on this study's base")
    if base["total_bits"] / 8 != base_footprint_bytes or (
            base_test_acc is not None and abs(base["test_acc"] - base_test_acc) > 1e-4):
        raise OrchestratorError(
            f"--peers {path} was measured on another base: {base['total_bits'] / 8:,.0f} B at "
            f"{100 * base['test_acc']:.2f}% test, the study's base is {base_footprint_bytes:,.0f} B at "
            f"{'n/a' if base_test_acc is None else f'{100 * base_test_acc:.2f}%'} test")
    return [{**r, "footprint_bytes": r["total_bits"] / 8, "compression": base_footprint_bytes * 8 / r["total_bits"]}
            for r in rows if r["point"] != "base"]


def dominated_by(peer: dict, front: list[dict]) -> int | None:
    """The smallest front trial at least as small and at least as accurate on the test split as `peer`
    (test: the one split on which neither side selected anything), or None where the peer is not dominated."""
    beats = [r for r in front if r["footprint_bytes"] <= peer["footprint_bytes"] and r["test_acc"] is not None
             and r["test_acc"] >= peer["test_acc"]]
    return min(beats, key=lambda r: r["footprint_bytes"])["trial"] if beats else None


def compare(peers: list[dict], front: list[dict]) -> list[dict]:
    """`peers`, smallest first, each with `dominated_by` (a front trial number, or None)."""
    return [{**p, "dominated_by": dominated_by(p, front)} for p in sorted(peers, key=lambda p: p["footprint_bytes"])]


def study_minutes(study) -> float:
    """Wall minutes of all the study's trials (the CPU time a peer point's minutes stand beside)."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
               if t.datetime_start and t.datetime_complete) / 60


def markdown(peers: list[dict], base_test_acc: float | None, minutes: float) -> list[str]:
    """The peers' rows of the Pareto table: tool, point, sizes, accuracies, CPU minutes and who dominates it."""
    out = [f"Peers on the same base (`benchmarks/peers.py`); the study's trials took {minutes:.1f} min in all. "
           "Dominated: a front trial at most as large with at least the peer's test accuracy.", "",
           "| tool | point | val acc | test acc | vs base (test) | footprint (bytes) | compression | CPU min "
           "| dominated by |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in peers:
        vs = "" if base_test_acc is None else f"{100 * (p['test_acc'] - base_test_acc):+.2f}"
        by = "**not dominated**" if p["dominated_by"] is None else f"trial {p['dominated_by']}"
        out.append(f"| {p['tool']} | {p['point']} | {100 * p['val_acc']:.2f}% | {100 * p['test_acc']:.2f}% | {vs} | "
                   f"{p['footprint_bytes']:,.0f} | {p['compression']:.1f}x | {p['cpu_minutes']:.1f} | {by} |")
    return out
