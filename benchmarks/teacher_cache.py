"""KD fine-tunes with cached teacher logits against the teacher run on every batch, side by side.

One study trial's pipeline (global magnitude pruning, KD fine-tune, W4 QAT with KD, A8 with stages 1-2
at A4), run without the step cache three ways in one process: teacher cache off, on and empty (the first
trial of a study: its QAT step already reuses the fine-tune's batches), on and filled by the run before
(every later trial). Step seconds from the pipeline records; the accuracies must agree to the last digit:

    python benchmarks/teacher_cache.py --base runs/resnet20-baseline.pt --data-dir D [--epochs 0.1 --rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from orchestrator.distill import TEACHER_CACHE
from orchestrator.pipeline import PipelineConfig, run_pipeline


def pipeline(args) -> PipelineConfig:
    ft = {"epochs": args.epochs, "lr": 0.01, "batch_size": 128, "kd": {}}
    q = {"method": "qat", "bits": 4, "act_bits": 8, "act_scale": "mse", "finetune": ft,
         "group_act_bits": {"stage1": 4, "stage2": 4}}
    return PipelineConfig(base=args.base, val_size=5000, steps=[
        {"prune": {"method": "global_magnitude", "ratio": args.ratio, "finetune": ft}}, {"quantize": q}])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--epochs", type=float, default=0.1, help="of each step's fine-tune")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    seconds: dict[str, list] = {"off": [], "on, empty": [], "on, filled": []}
    accs = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in seconds:
                TEACHER_CACHE.enabled = mode != "off"
                if mode == "on, empty":
                    TEACHER_CACHE.entries.clear()
                    TEACHER_CACHE.bytes = 0
                hits = TEACHER_CACHE.hits
                res = run_pipeline(pipeline(args), data_dir=args.data_dir, out=Path(tmp) / f"{r}.pt")
                steps = res["steps"][1:]
                seconds[mode].append([s["seconds"] for s in steps])
                accs.add((tuple(s["eval_acc"] for s in steps), res["final"]["test_acc"]))
                print(f"round {r} cache {mode}: steps {', '.join(f'{s:.1f}' for s in seconds[mode][-1])} s, "
                      f"{TEACHER_CACHE.hits - hits} hits, val {steps[-1]['eval_acc']:.4f}", flush=True)
    print(f"\nResNet-20 base {args.base}, {args.ratio:.0%} pruning, {args.epochs} epoch KD fine-tune + {args.epochs} "
          f"epoch W4 QAT with KD; median of {args.rounds} rounds; same accuracies in every run: {len(accs) == 1}")
    print("| teacher cache | prune + fine-tune s | QAT s | total s | vs off |\n|---|---:|---:|---:|---:|")
    ref = statistics.median(sum(s) for s in seconds["off"])
    for mode, runs in seconds.items():
        total = statistics.median(sum(s) for s in runs)
        ft, q = (statistics.median(s[i] for s in runs) for i in (0, 1))
        print(f"| {mode} | {ft:.1f} | {q:.1f} | {total:.1f} | {ref / total:.2f}x |")


if __name__ == "__main__":
    main()
