"""Evaluation of a quantized export: the eager in-place activation quantizer vs the traceable expression.

A study trial evaluates its last step on the validation split; for a ResNet-20 with 19 quantized layer
inputs the activation fake quantization was half of that time. Both paths give the same logits bit for
bit (checked here); they are timed in interleaved rounds, one process, so the ratio is fair on a noisy machine.

    python benchmarks/eval_speed.py runs/studies/quick-cpu/trial0003.orcx --data-dir ../shared/data/cifar10-jpeg75
"""

from __future__ import annotations

import argparse
import time

import torch

from orchestrator.data import load_split, split_validation
from orchestrator.footprint.export import load_export
from orchestrator.qformat import ActQuant
from orchestrator.train import evaluate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    model, header = load_export(args.export)
    _, val = split_validation(load_split(header["dataset"], "train", args.data_dir), args.val_size)
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times = {True: [], False: []}
    with torch.no_grad():
        logits = {}
        for fused in (True, False):
            ActQuant.fused = fused
            logits[fused] = model(x)
    assert torch.equal(logits[True], logits[False]), "the two paths differ"
    for _ in range(args.rounds):
        for fused in (True, False):
            ActQuant.fused = fused
            t0 = time.perf_counter()
            acc = evaluate(model, val, header["normalization"])["acc"]
            times[fused].append(time.perf_counter() - t0)
    ActQuant.fused = True
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.export}: {len(val)} images, accuracy {100 * acc:.2f}% both ways (logits bit-identical)")
    print(f"traceable expression {best[False]:.1f} s, in-place kernel {best[True]:.1f} s "
          f"({best[False] / best[True]:.2f}x; best of {args.rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
