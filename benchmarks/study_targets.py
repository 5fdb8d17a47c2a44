"""A study's front against the targets of the studies issue, on test accuracy of the exported models:
the smallest footprint within 1 and 3 points of the dense base, and the number of front points
within 5 points.

    python benchmarks/study_targets.py search_spaces/quick_cpu.yaml --storage sqlite:///runs/evidence/studies.db
"""

from __future__ import annotations

import argparse

from orchestrator.study import load_space, open_study
from orchestrator.study.pareto import rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("space")
    p.add_argument("--storage", default="sqlite:///runs/studies.db")
    args = p.parse_args()
    study = open_study(load_space(args.space), args.storage, create=False)
    data = rows(study)
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
              f"{100 * r['test_acc']:.2f}% | {100 * (r['test_acc'] - base_test):+.2f} | {r['footprint_bytes']:,.0f} B | "
              f"{r['compression']:.1f}x |")
    for points in (1.0, 3.0, 5.0):
        ok = [r for r in front if 100 * (base_test - r["test_acc"]) <= points]
        best = max(ok, key=lambda r: r["compression"], default=None)
        print(f"front points within {points:g} test points: {len(ok)}; smallest: "
              + ("none" if best is None else f"trial {best['trial']} {best['compression']:.1f}x "
                 f"({100 * (best['test_acc'] - base_test):+.2f} points, {best['footprint_bytes']:,.0f} B)"))


if __name__ == "__main__":
    main()
