"""Accuracy recovered per CPU minute: how much fine-tuning a study trial can afford.

ResNet-20 (or any base) pruned to --ratio by global magnitude, then QAT at --bits weights and
--act-bits activations; each step fine-tuned for E epochs (fractions allowed), with and without KD
from the base. Every point is one `orchestrator pipeline`; the base evaluation and the PTQ
references are shared through the step cache. Writes a Markdown table and the raw records:

    python benchmarks/recovery.py --base runs/resnet20-baseline.pt --data-dir D --epochs 0.1 0.25 0.5 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.pipeline import PipelineConfig, run_pipeline


def pipeline(args, epochs: float, kd: bool) -> PipelineConfig:
    ft = {"epochs": epochs, "lr": args.lr, "kd": {} if kd and epochs else None}
    q = {"method": "qat" if epochs else "ptq", "bits": args.bits, "act_bits": args.act_bits,
         "finetune": ft}
    return PipelineConfig(base=args.base, val_size=args.val_size, steps=[
        {"prune": {"method": "global_magnitude", "ratio": args.ratio, "finetune": ft}}, {"quantize": q}])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--epochs", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    p.add_argument("--kd", choices=["both", "on", "off"], default="both")
    p.add_argument("--out", default="runs/evidence/recovery")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kds = {"both": [False, True], "on": [True], "off": [False]}[args.kd]
    points = [(0.0, False)] + [(e, kd) for e in args.epochs for kd in kds]
    for epochs, kd in points:
        name = f"e{epochs:g}{'-kd' if kd else ''}"
        record = out / f"{name}.json"
        if record.is_file():  # finished points are kept: an interrupted run resumes
            result = json.loads(record.read_text())
        else:
            result = run_pipeline(pipeline(args, epochs, kd), data_dir=args.data_dir, out=out / f"{name}.pt",
                                  cache_dir=out / "cache")
        print(name, json.dumps(result["final"]["test_acc"]), flush=True)
    rows = []  # every point finished in this folder, also by earlier invocations with other --epochs/--kd
    for record in out.glob("e*.json"):
        result = json.loads(record.read_text())
        ft = result["pipeline"]["steps"][0]["prune"]["finetune"]
        pruned, final = result["steps"][1], result["final"]
        rows.append({"epochs": ft["epochs"], "kd": ft.get("kd") is not None, "pruned_val": pruned["eval_acc"],
                     "val": result["steps"][-1]["eval_acc"], "test": final["test_acc"],
                     "base_test": final["base_test_acc"], "compression": final["compression"],
                     "minutes": sum(s["seconds"] for s in result["steps"][1:]) / 60})
    rows.sort(key=lambda r: (r["epochs"], r["kd"]))
    ref = rows[0]
    lines = [f"global magnitude {args.ratio:.0%} + W{args.bits}A{args.act_bits} on {args.base}; base test "
             f"{100 * ref['base_test']:.2f}%; E epochs of fine-tune after pruning and E of QAT (lr {args.lr}, cosine)",
             "", "| fine-tune per step | KD | val after pruning | test (exported) | vs base | CPU minutes | "
             "points recovered per minute (test, vs PTQ) | compression |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_min = "" if not r["epochs"] else f"{100 * (r['test'] - ref['test']) / r['minutes']:.2f}"
        lines.append(f"| {r['epochs']:g} | {'yes' if r['kd'] else 'no'} | {100 * r['pruned_val']:.2f}% | "
                     f"{100 * r['test']:.2f}% | {100 * (r['test'] - r['base_test']):+.2f} | {r['minutes']:.1f} | "
                     f"{per_min} | {r['compression']:.1f}x |")
    (out / "recovery.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
