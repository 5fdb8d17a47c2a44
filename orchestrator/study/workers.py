"""Several workers of one study on one machine, each with its share of the cores.

Torch takes every core by default, and two such processes on 2 cores were measured 4.5x slower per
epoch than one (98 vs 458 img/s): N workers must split the cores. Each worker is the same
`orchestrator study run` command line in its own process with cores/N threads, sharing the study
through its storage exactly as workers on several machines do; its output goes to a log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or os.cpu_count() or 1) // workers)


def run_workers(argv: list[str], workers: int, log_dir: Path, echo=print, env: dict | None = None) -> int:
    """Run `orchestrator <argv>` in `workers` processes, cores/N torch threads each, with `env` added to
    their environment; returns the first non-zero exit code (0 when all succeed). Ctrl-C stops them all;
    finished trials are kept."""
    threads = str(threads_per_worker(workers))
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    try:
        for k in range(workers):
            path = log_dir / f"worker-{k}.log"
            logs.append(open(path, "w"))
            procs.append(subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *argv], env=env,
                                          stdout=logs[-1], stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True))  # Ctrl-C reaches them once, from here
            echo(f"worker {k}: pid {procs[-1].pid}, {threads} threads, log {path}")
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        for f in logs:
            f.close()
    for k, (code, f) in enumerate(zip(codes, logs)):
        last = [ln for ln in Path(f.name).read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
        echo(f"worker {k}: exit {code}: {last[0][:300]}")
    return next((c for c in codes if c), 0)
