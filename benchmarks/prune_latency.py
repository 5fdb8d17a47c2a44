"""CPU inference latency of structurally pruned models vs dense, next to their MAC ratios.

    python benchmarks/prune_latency.py [--batches 1 64 --rounds 5 --iters 20]

Weights are random: latency depends on the shapes only (dense kernels do not skip zeros, which
the unstructured row shows). Models are timed interleaved, round after round, and the median
per model is reported, so drifting machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from orchestrator.footprint import measure
from orchestrator.models import build_model, count_parameters
from orchestrator.pruning import finalize_, prune_

LI_B = {"method": "l1_filter", "stage_ratios": [0.6, 0.3, 0.1],
        "skip": ["layer1.7.conv1", "layer1.8.conv1", "layer2.0.conv1", "layer2.7.conv1", "layer3.0.conv1",
                 "layer3.8.conv1"]}


def variants():
    torch.manual_seed(0)
    r56 = build_model("resnet56").eval()
    yield "resnet56 dense", "resnet56 dense", r56
    yield "resnet56 Li pruned-B", "resnet56 dense", prune_(copy.deepcopy(r56), LI_B)
    yield "resnet56 l1_filter 0.5", "resnet56 dense", prune_(copy.deepcopy(r56), {"method": "l1_filter", "ratio": 0.5})
    yield "resnet56 90% unstructured", "resnet56 dense", finalize_(
        prune_(copy.deepcopy(r56), {"method": "global_magnitude", "ratio": 0.9}))
    r56b = build_model("resnet56b").eval()
    yield "resnet56b dense", "resnet56b dense", r56b
    yield "resnet56b l1_filter 0.5 all", "resnet56b dense", prune_(copy.deepcopy(r56b),
                                                                   {"method": "l1_filter", "ratio": 0.5, "groups": "all"})
    vgg = build_model("vgg16").eval()
    yield "vgg16 dense", "vgg16 dense", vgg
    yield "vgg16 l1_filter 0.5", "vgg16 dense", prune_(copy.deepcopy(vgg), {"method": "l1_filter", "ratio": 0.5})


@torch.inference_mode()
def time_once(model, x, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        model(x)
    return (time.perf_counter() - t0) / iters


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    models = [(name, ref, m.eval()) for name, ref, m in variants()]
    macs = {name: measure(m).macs for name, _, m in models}
    params = {name: count_parameters(m) for name, _, m in models}
    print("| model | params | MACs | MACs vs dense | " + " | ".join(
        f"batch {b} ms | speedup" for b in args.batches) + " |")
    print("|---|---:|---:|---:|" + "---:|---:|" * len(args.batches))
    results = {}
    for b in args.batches:
        x = torch.randn(b, 3, 32, 32)
        for _, _, m in models:
            time_once(m, x, 2)  # warm-up
        samples = {name: [] for name, _, _ in models}
        for _ in range(args.rounds):
            for name, _, m in models:
                samples[name].append(time_once(m, x, max(1, args.iters // max(1, b // 16))))
        results[b] = {n: statistics.median(s) for n, s in samples.items()}
    for name, ref, _ in models:
        cells = [f"{1000 * results[b][name]:.2f} | {results[b][ref] / results[b][name]:.2f}x" for b in args.batches]
        print(f"| {name} | {params[name]:,} | {macs[name]:,} | {macs[name] / macs[ref]:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
