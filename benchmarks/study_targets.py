"""A study's front against the targets of the studies issue, on test accuracy of the exported models:
the smallest footprint within 1 and 3 points of the dense base, and the number of front points
within 5 points; then each trial's time per stage (its record's `timings`), training and the rest apart.

    python benchmarks/study_targets.py search_spaces/quick_cpu.yaml [--base FILE] [--name NAME] [--storage URL]

With `--began ISO --minutes M`, only the trials that started within M minutes of ISO (when `study run` was
launched) count: what a study with `timeout_minutes: M` would have answered, e.g. a 25-minute budget scaled
to a faster machine. Front trials without a test accuracy (off the full front) show n/a: `orchestrator eval`.
"""

from __future__ import annotations

import argparse

from datetime import datetime, timedelta

from orchestrator.study import load_space, open_study
from orchestrator.study.pareto import non_dominated, pct, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("space")
    p.add_argument("--storage", default="sqlite:///runs/studies.db")
    p.add_argument("--base", help="the space run on this checkpoint (`study run --base`)")
    p.add_argument("--name", help="the study's name (`study run --name`)")
    p.add_argument("--began", type=datetime.fromisoformat, help="local time `study run` was launched")
    p.add_argument("--minutes", type=float, help="with --began: count the trials started within this")
    args = p.parse_args()
    study = open_study(load_space(args.space, base=args.base, name=args.name), args.storage, create=False)
    data = rows(study)
    if args.began and args.minutes:
        data = cut(study, data, args.began + timedelta(minutes=args.minutes))
    front = [r for r in data if r["pareto"]]
    base_test, base_bytes = data[0]["base_test_acc"], data[0]["base_footprint_bytes"]
    trials = [t for t in study.get_trials(deepcopy=False)]
    print(f"{len(data)} distinct complete trials, {sum(not r['feasible'] for r in data)} infeasible, "
          f"{sum('duplicate_of' in t.user_attrs for t in trials)} repeats answered from records, "
          f"{sum(t.state.name == 'FAIL' for t in trials)} failed; base test {100 * base_test:.2f}%, "
          f"{base_bytes:,.0f} B")
    print("| trial | proposed by | configuration | val | test | vs base (test) | footprint | smaller by |\n"
          "|---:|---|---|---:|---:|---:|---:|---:|")
    for r in front:
        print(f"| {r['trial']} | {r['proposed_by']} | {r['label']} | {100 * r['val_acc']:.2f}% | "
              f"{pct(r['test_acc'])} | {_points(r['test_acc'], base_test)} | {r['footprint_bytes']:,.0f} B | "
              f"{r['compression']:.1f}x |")
    for points in (1.0, 3.0, 5.0):
        ok = [r for r in front if r["test_acc"] is not None and 100 * (base_test - r["test_acc"]) <= points]
        best = max(ok, key=lambda r: r["compression"], default=None)
        print(f"front points within {points:g} test points: {len(ok)}; smallest: "
              + ("none" if best is None else f"trial {best['trial']} {best['compression']:.1f}x "
                 f"({100 * (best['test_acc'] - base_test):+.2f} points, {best['footprint_bytes']:,.0f} B)"))
    stage_times(trials)


def cut(study, data: list[dict], deadline: datetime) -> list[dict]:
    """The rows of trials started before `deadline` (a timeout lets the running trial finish), with the
    front recomputed among them."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    kept = [r for r in data if trials[r["trial"]].datetime_start <= deadline]
    signs = [1 if d.name == "MAXIMIZE" else -1 for d in study.directions]
    values = {r["trial"]: [s * v for s, v in zip(signs, trials[r["trial"]].values)] for r in kept}
    front = set(non_dominated([r["trial"] for r in kept if r["feasible"]], values))
    print(f"trials started by {deadline:%H:%M:%S}: {len(kept)} of {len(data)}")
    return [{**r, "pareto": r["trial"] in front} for r in kept]


def _points(x, base) -> str:
    return "n/a" if x is None else f"{100 * (x - base):+.2f}"


STAGES = ("train", "evaluate", "mlflow", "screen", "footprint", "export", "save", "cache", "load")


def stage_times(trials) -> None:
    """Seconds per stage of every trial that ran its pipeline, and the mean: what a trial costs besides training."""
    timed = [t for t in trials if t.state.name == "COMPLETE" and "timings" in t.user_attrs]
    if not timed:
        return
    print("\n| trial | " + " | ".join(STAGES) + " | trial | trial minus training |\n|---:|" + "---:|" * (len(STAGES) + 2))
    sums = dict.fromkeys((*STAGES, "trial", "rest"), 0.0)
    for t in timed:
        tm = t.user_attrs["timings"]
        row = {**{k: tm.get(k, 0.0) for k in STAGES}, "trial": tm.get("trial", 0.0)}
        row["rest"] = row["trial"] - row["train"]
        for k, v in row.items():
            sums[k] += v
        print(f"| {t.number} | " + " | ".join(f"{row[k]:.1f}" for k in (*STAGES, "trial", "rest")) + " |")
    print("| mean | " + " | ".join(f"{sums[k] / len(timed):.1f}" for k in (*STAGES, "trial", "rest")) + " |")


if __name__ == "__main__":
    main()
