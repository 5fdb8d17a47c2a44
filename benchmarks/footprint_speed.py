"""Time `orchestrator.footprint.measure` (parameters, activations, MACs) and `export` on zoo models.

    python benchmarks/footprint_speed.py [--arch resnet56 --repeats 5]

Prints the median wall time per call; the target is well under a second for ResNet-56 on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from orchestrator.footprint import measure
from orchestrator.footprint.export import export
from orchestrator.models import build_model
from orchestrator.pruning.core import finalize_, prune_global_magnitude_


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["resnet20", "resnet56", "mobilenetv2"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            dense = build_model(arch).eval()
            sparse = finalize_(prune_global_magnitude_(build_model(arch).eval(), 0.9))
            for label, model in (("dense", dense), ("90% sparse", sparse)):
                t_measure = timed(lambda: measure(model), args.repeats)
                t_export = timed(lambda: export(model, Path(tmp) / "m.orcx"), args.repeats)
                print(f"{arch:<12} {label:<11} measure {t_measure * 1000:8.1f} ms   export {t_export * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
