"""Markdown tables for docs/pruning.md and docs/quantization.md from the evidence runs' own records.

    python benchmarks/evidence_tables.py [runs/evidence]

Reads the checkpoints and JSON files the evidence scripts wrote (numbers are never typed by hand);
missing runs are left out of the tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def ckpt(path: Path):
    return torch.load(path, weights_only=True, map_location="cpu") if path.is_file() else None


def pruned(c: dict) -> dict:
    """A `prune` checkpoint's numbers from its record (prune runs as a one-step pipeline); checkpoints
    from before that carry them in their metrics directly."""
    m = c["metrics"]
    if "pipeline" not in m:
        return m
    base, step, final = m["pipeline"]["steps"][0], m["pipeline"]["steps"][1], m["pipeline"]["final"]
    return {"test_acc": final["test_acc"], "base_test_acc": base["test_acc"], "sparsity": m["sparsity"],
            "prune_seconds": step["seconds"], "params": final["params"], "base_params": base["params"],
            "macs": final["macs"], "base_macs": base["macs"]}


def existing(d: Path, runs):
    """(label, numbers) of the runs whose checkpoint exists."""
    for name, f in runs:
        c = ckpt(d / f)
        if c:
            yield name, pruned(c)


def header(title: str, columns: str, align: str) -> None:
    print(f"\n### {title}\n\n| {columns} |\n|{align}|")


def pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def pruning(d: Path) -> None:
    sweep = {(r["method"], r["ratio"]): r for r in json.loads((d / "sweep20/sweep.json").read_text())["rows"]} \
        if (d / "sweep20/sweep.json").is_file() else {}
    print("### Han et al. (prune + retrain) vs no retraining, ResNet-20\n")
    print("| target sparsity | global magnitude, no retraining | Han: 3 rounds x 1 epoch retraining | base |")
    print("|---:|---:|---:|---:|")
    for r in (0.8, 0.9):
        c = ckpt(d / f"r20-han-{r}.pt")
        if c:
            m = pruned(c)
            print(f"| {r:.0%} | {pct(sweep.get(('global_magnitude', r), {}).get('acc'))} | {pct(m['test_acc'])} "
                  f"(sparsity {m['sparsity']['total']:.1%}, {m['prune_seconds'] / 60:.1f} min) | {pct(m['base_test_acc'])} |")
    print("\n### ThiNet vs L1 filters vs random filters: half of every block's inner channels, ResNet-20\n")
    print("| method | params | MACs | no fine-tune | 1 epoch fine-tune |")
    print("|---|---:|---:|---:|---:|")
    for m in ("l1_filter", "thinet", "random_filter"):
        a, b = ckpt(d / f"r20-{m}-0.5.pt"), ckpt(d / f"r20-{m}-0.5-ft1.pt")
        if a:
            ma = pruned(a)
            print(f"| {m} | {ma['params']:,} ({ma['params'] / ma['base_params'] - 1:+.1%}) | {ma['macs']:,} "
                  f"({ma['macs'] / ma['base_macs'] - 1:+.1%}) | {pct(ma['test_acc'])} | "
                  f"{pct(b['metrics']['test_acc']) if b else ''} |")
    header("Li et al. ResNet-56-pruned-B recipe on our fine-tuned ResNet-56",
           "model | params | MACs | test accuracy | error vs baseline", "---|---:|---:|---:|---:")
    for name, m in existing(d, (("pruned-B, no retraining", "r56-li-b.pt"),
                                ("pruned-B, 1 epoch retraining", "r56-li-b-ft1.pt"))):
        if name.endswith("no retraining"):
            print(f"| baseline (ResNet-56 fine-tuned) | {m['base_params']:,} | {m['base_macs']:,} | "
                  f"{pct(m['base_test_acc'])} | |")
        print(f"| {name} | {m['params']:,} ({m['params'] / m['base_params'] - 1:+.1%}) | {m['macs']:,} "
              f"({m['macs'] / m['base_macs'] - 1:+.1%}) | {pct(m['test_acc'])} | "
              f"{100 * (m['base_test_acc'] - m['test_acc']):+.2f} points |")
    s = d / "sens56/sensitivity.json"
    if s.is_file():
        t = json.loads(s.read_text())["table"]
        ratios = sorted({r for row in t["groups"].values() for r in row}, key=float)
        print(f"\n### Sensitivity of ResNet-56 (accuracy on {json.loads(s.read_text())['split']}, "
              f"baseline {pct(t['baseline'])})\n")
        print("| group | " + " | ".join(f"{float(r):.0%} pruned" for r in ratios) + " |")
        print("|---|" + "---:|" * len(ratios))
        for g, row in t["groups"].items():
            print(f"| {g} | " + " | ".join(pct(row.get(r)) for r in ratios) + " |")


def quantization(d: Path) -> None:
    def rec(name):
        p = d / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    print("### Accuracy vs weight bits, ResNet-20 (first conv and classifier at 8 bits for int/binary)\n")
    print("| weights | activations | PTQ test acc | QAT (1 epoch) test acc | parameter storage, PTQ / QAT (vs fp32) |")
    print("|---|---:|---:|---:|---:|")
    rows = [("fp32", "32", None, None), ("fp16", "32", "q-ptq-fp16", None), ("int8", "32", "q-ptq-w8", None),
            ("int8", "8", "q-ptq-w8a8", None), ("int4", "32", "q-ptq-w4", "q-qat-w4"), ("int4", "4", None, "q-qat-w4a4"),
            ("int3", "32", "q-ptq-w3", None), ("int2", "32", "q-ptq-w2", "q-qat-w2"),
            ("binary", "32", "q-ptq-binary", "q-qat-binary")]
    base = rec("q-ptq-w8")
    for w, a, p, q in rows:
        rp, rq = (rec(p) if p else None), (rec(q) if q else None)
        r = rp or rq
        if w == "fp32" and base:
            b = base["steps"][0]
            print(f"| fp32 | 32 | {pct(base['final']['base_test_acc'])} | | {b['param_bits'] / 8:,.0f} B (1.0x) |")
            continue
        if not r:
            continue
        sizes = " / ".join(f"{x['final']['param_bits'] / 8:,.0f} B ({x['final']['param_compression']:.1f}x)"
                           for x in (rp, rq) if x)
        print(f"| {w} | {a} | {pct(rp['final']['test_acc']) if rp else ''} | {pct(rq['final']['test_acc']) if rq else ''} | "
              f"{sizes} |")
    header("KD vs no KD after 80% global magnitude pruning, 1 epoch fine-tune, ResNet-20",
           "fine-tune | test accuracy", "---|---:")
    for name, m in existing(d, (("cross-entropy", "kd-off.pt"), ("KD from the dense ResNet-20 (T=4, alpha=0.9)",
                                                                   "kd-on.pt"))):
        print(f"| {name} | {pct(m['test_acc'])} |")
    r = rec("combined")
    if r:
        print("\n### Combined pipeline (benchmarks/combined_pipeline.yaml), ResNet-20\n")
        print("| step | accuracy | params | nonzero | parameter storage | activation peak | total |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for s in r["steps"]:
            print(f"| {s['step']} | {pct(s['eval_acc'])} | {s['params']:,} | {s['nonzero']:,} | {s['param_bits'] / 8:,.0f} B | "
                  f"{s['activation_peak_bits'] / 8:,.0f} B ({s['act_bits']}-bit) | {s['total_bits'] / 8:,.0f} B |")
        f = r["final"]
        print(f"\nExported file: {f['file_bytes']:,} bytes (payload {f['payload_bytes']:,}). Test accuracy "
              f"{pct(f['base_test_acc'])} -> {pct(f['test_acc'])}; total footprint {f['compression']:.1f}x smaller, "
              f"parameters {f['param_compression']:.1f}x smaller.")


if __name__ == "__main__":
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/evidence")
    what = sys.argv[2] if len(sys.argv) > 2 else "all"
    if what in ("all", "pruning"):
        pruning(d)
    if what in ("all", "quantization"):
        quantization(d)
