"""Trials per hour of one study run by 1 worker and by N workers sharing one Optuna storage.

    python benchmarks/study_scaling.py --data-dir DIR --storage postgresql://... [--workers 1,2]

Each worker count runs its own copy of the search space (study `<name>-w<N>`, fresh output folder and
MLflow store) with N `orchestrator study run` processes started together, each limited to
cores/N torch threads so that the machine is shared, not oversubscribed. Reports wall time, finished
trials, trials per hour and the ratio to one worker, and checks that no trial number ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml


def run(space: dict, workers: int, args) -> dict:
    name = f"{space['name']}-w{workers}"
    out = Path(args.out) / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        optuna.delete_study(study_name=name, storage=args.storage)
    except KeyError:
        pass
    space_file = out / "space.yaml"
    space_file.write_text(yaml.safe_dump({**space, "name": name}, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    cmd = [sys.executable, "-m", "orchestrator.cli", "study", "run", str(space_file), "--storage", args.storage,
           "--mlflow", f"sqlite:///{out.resolve()}/mlflow.db", "--out", str(out / "studies"),
           "--data-dir", args.data_dir, "--quiet"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=open(out / f"worker{i}.log", "w"), stderr=subprocess.STDOUT)
             for i in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name=name, storage=args.storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    numbers = [t.number for t in trials]
    return {"workers": workers, "exit_codes": codes, "wall_s": round(wall, 1), "complete": len(done),
            "other_states": sorted({t.state.name for t in trials} - {"COMPLETE"}),
            "unique_numbers": len(set(numbers)) == len(numbers),
            "trials_per_hour": round(3600 * len(done) / wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="benchmarks/scaling.yaml")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--storage", required=True, help="Optuna storage URL (PostgreSQL for several workers)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--out", default="runs/evidence/scaling")
    args = p.parse_args()
    space = yaml.safe_load(Path(args.space).read_text())
    results = [run(space, int(w), args) for w in args.workers.split(",")]
    base = results[0]["trials_per_hour"]
    print("| workers | wall | finished trials | trials per hour | ratio |\n|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['workers']} | {r['wall_s'] / 60:.1f} min | {r['complete']} | {r['trials_per_hour']} | "
              f"{r['trials_per_hour'] / base:.2f} |")
    Path(args.out, "scaling.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
