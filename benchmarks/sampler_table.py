"""Samplers side by side for a 10-30-trial study, on the cheap screen as the objective (a surrogate).

A real trial costs minutes on 2 CPU cores, so 4 samplers x 3 seeds x 30 trials of them is days. The screen
(`autostart.screen`: the configuration pruned and quantized without training, BN re-estimated, accuracy on
a validation subset) costs about a second, and its landscape has the space's real structure: the same
dimensions, the same exact footprint, the same interactions between ratio, bits and activation bits. Each
sampler runs the study's own setup (`runner._sampler`: per-trial seeds, start-up trials = start points)
after the same automatic start points, and the table gives the hypervolume of the feasible front (screen
accuracy vs footprint; reference: the floor and the dense footprint, footprint on a log scale) after 10, 20
and 30 trials, mean and spread over seeds.

    python benchmarks/sampler_table.py search_spaces/quick_cpu.yaml --data-dir D [--trials 30 --seeds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume of (accuracy up, log-footprint down) points dominating `ref` (acc_floor, log_foot_max)."""
    pts = sorted((f, a) for a, f in points if a > ref[0] and f < ref[1])
    hv, best = 0.0, ref[0]
    for i, (f, a) in enumerate(pts):  # sweep by footprint: each point adds the strip up to the next footprint
        best = max(best, a)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        hv += (nxt - f) * (best - ref[0])
    return hv


def main():
    import optuna

    from orchestrator.checkpoint import load_model
    from orchestrator.data import load_split, split_validation
    from orchestrator.footprint import measure
    from orchestrator.study import load_space
    from orchestrator.study import autostart
    from orchestrator.study.runner import _sampler

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("space")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samplers", default="nsga2,tpe,gp,random")
    p.add_argument("--floor", type=float, default=0.3, help="screen accuracy drop (fraction) that is feasible")
    p.add_argument("--start", choices=["auto", "none"], default="auto",
                   help="enqueue the automatic start points first (auto), or let each sampler start alone (none)")
    p.add_argument("--cache", default="runs/sampler_table")
    p.add_argument("--out", default=None, help="JSON of every trajectory")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(args.space)
    base, ckpt = load_model(space.base)
    base.eval()
    train, val = split_validation(load_split(ckpt.dataset, "train", args.data_dir), space.val_size)
    opts = space.sampler.auto
    probe = autostart.Probe(train, val, ckpt.normalization, opts.images, opts.bn_images, "cpu")
    t0 = time.perf_counter()
    plan = autostart.auto_start(space, args.data_dir, args.cache)
    print(f"auto start: {len(plan['points'])} points in {time.perf_counter() - t0:.0f} s")
    base_acc = plan["baseline"]
    dense = measure(base).total_bits
    ref = (base_acc - args.floor, math.log(dense))
    memo: dict[str, tuple[float, int]] = {}

    def evaluate(params: dict) -> tuple[float, int]:
        key = json.dumps(space.pipeline(params).model_dump(mode="json"), sort_keys=True)
        if key not in memo:  # one configuration, one measurement, whichever sampler asks
            with torch.no_grad():
                model = autostart.build(space, base, params, probe)
                acc = probe.accuracy(model, recalibrate=False)
            pipeline = space.pipeline(params)
            memo[key] = (acc, measure(model.cpu(), act_bits=pipeline.act_bits).total_bits)
        return memo[key]

    table, runs = {}, {}
    for name in args.samplers.split(","):
        for seed in range(args.seeds):
            s = space.model_copy(update={"sampler": space.sampler.model_copy(
                update={"name": name, "seed": seed, "start": args.start})})
            study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(s))
            for point in plan["points"] if args.start == "auto" else []:
                study.enqueue_trial(point)
            curve = []
            t1 = time.perf_counter()

            def objective(trial):
                s.suggest(trial)  # every parameter suggested, as a study trial does
                acc, bits = evaluate(dict(trial.params))
                trial.set_constraint("drop", (base_acc - acc) - args.floor)
                return acc, bits

            for _ in range(args.trials):
                study.optimize(objective, n_trials=1)
                done = [t for t in study.trials if t.state.name == "COMPLETE"]
                feas = [(t.values[0], math.log(t.values[1])) for t in done if all(v <= 0 for v in t.constraints.values())]
                curve.append(hypervolume(feas, ref))
            curve += [curve[-1]] * (10 - len(curve))  # fewer than 10 trials: the table's first column holds
            runs[f"{name}/{seed}"] = {"hv": curve, "seconds": time.perf_counter() - t1}
            print(f"{name} seed {seed}: HV@10 {curve[9]:.4f} @20 {curve[min(19, len(curve) - 1)]:.4f} "
                  f"@{len(curve)} {curve[-1]:.4f} ({time.perf_counter() - t1:.0f} s)", flush=True)
        table[name] = {n: [runs[f"{name}/{seed}"]["hv"][n - 1] for seed in range(args.seeds)]
                       for n in (10, 20, 30) if n <= args.trials}
    first = f"{len(plan['points'])} auto start points first" if args.start == "auto" else "no start point"
    print(f"\nhypervolume of the feasible screen front (floor {100 * args.floor:g} points, log footprint), "
          f"mean +- sd over {args.seeds} seeds, {first}:")
    print("| sampler | " + " | ".join(f"{n} trials" for n in table[next(iter(table))]) + " |")
    print("|---|" + "---:|" * len(table[next(iter(table))]))
    for name, cols in table.items():
        cells = [f"{statistics.mean(v):.4f} +- {statistics.pstdev(v):.4f}" for v in cols.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"distinct configurations measured: {len(memo)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"table": table, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
