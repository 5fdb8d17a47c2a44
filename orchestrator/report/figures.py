"""The report's figures, each saved as PNG and SVG with a caption that says how it was made."""

from __future__ import annotations

from pathlib import Path

from ..plots import _pyplot  # matplotlib itself is imported on the first figure
from ..study.pareto import plot_peers


def _save(fig, out: Path, name: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        paths[ext] = out / f"{name}.{ext}"
        fig.savefig(paths[ext], dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return paths


def pareto(d: dict, out: Path) -> dict:
    fig, ax = _pyplot().subplots(figsize=(8, 4.8))
    rs = [r for r in d["rows"] if r["feasible"]]
    bad = [r for r in d["rows"] if not r["feasible"]]
    ax.scatter([r["footprint_bytes"] for r in rs], [100 * r["val_acc"] for r in rs], s=10, color="0.6", alpha=0.3,
               label="feasible trials")
    if bad:
        ax.scatter([r["footprint_bytes"] for r in bad], [100 * r["val_acc"] for r in bad], s=10, marker="x",
                   color="0.75", label=f"below the accuracy floor ({len(bad)})")
    for i, (method, pts) in enumerate(sorted(d["curves"].items())):
        ax.step([p[0] for p in pts], [100 * p[1] for p in pts], where="post", lw=1, color=f"C{(i + 1) % 10}",
                alpha=0.8, label=f"{method} (best per footprint)")
    front = d["front"]
    ax.step([r["footprint_bytes"] for r in front], [100 * r["val_acc"] for r in front], where="post", color="C0",
            lw=2)
    ax.plot([r["footprint_bytes"] for r in front], [100 * r["val_acc"] for r in front], "o", color="C0", ms=5,
            label="Pareto front")
    ax.scatter([d["dense"]["total_bytes"]], [100 * d["dense"]["val_acc"]], marker="*", s=160, color="C3", zorder=5,
               label=f"dense {d['dense']['arch']}")
    plot_peers(ax, d.get("peers", []))
    ax.set_xscale("log")
    ax.set(xlabel="total footprint: parameters + peak activations (bytes, log)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    paths = _save(fig, out, "pareto")
    peers = " and the peers' points on the same base (black outlines, one shape per tool)" if d.get("peers") else ""
    return {**paths, "caption": f"Every complete trial of study {d['study']} (grey), each method's best accuracy at "
                                f"or below each footprint (lines), the Pareto front (blue), the dense base model "
                                f"(star){peers}. Footprint of the exported file; accuracy on the validation split."}


def importances(d: dict, out: Path) -> dict | None:
    imp = {k: v for k, v in d["importances"].items() if isinstance(v, dict)}
    if not imp:
        return None
    fig, axes = _pyplot().subplots(1, len(imp), figsize=(4.2 * len(imp), 3), squeeze=False)
    for ax, (objective, values) in zip(axes[0], imp.items()):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="C0")
        ax.set(title=objective, xlabel="importance (fANOVA)")
    paths = _save(fig, out, "importances")
    return {**paths, "caption": "Optuna's parameter importances (optuna.importance.get_param_importances) for each "
                                "objective over the complete trials."}


def bits(d: dict, out: Path) -> dict | None:
    if len(d["by_bits"]) < 2:
        return None
    fig, ax = _pyplot().subplots(figsize=(5, 3))
    labels = [str(b) for b in d["by_bits"]]
    ax.bar(labels, [100 * v for v in d["by_bits"].values()], color="C2")
    ax.axhline(100 * d["dense"]["val_acc"], color="k", ls="--", lw=0.8)
    ax.set(xlabel="weight bits (32 float, 1 binary)", ylabel="best validation accuracy (%)")
    paths = _save(fig, out, "bits")
    return {**paths, "caption": "Best validation accuracy among the trials at each weight bit-width (dashed: dense)."}


def best_model(d: dict, out: Path) -> dict | None:
    bm = d["best_model"]
    if not bm:
        return None
    layers = [k for k in bm["sparsity"] if k != "total"]
    fig, ax = _pyplot().subplots(figsize=(8, 3))
    ax.bar(range(len(layers)), [100 * bm["sparsity"][k] for k in layers], color="C1")
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
    ax.set(ylabel="zero weights (%)", ylim=(0, 100))
    paths = _save(fig, out, "best_model")
    return {**paths, "caption": f"Per-layer sparsity of trial {d['best']['trial']} ({d['best']['label']}), read from its "
                                f"checkpoint; its widths: {bm['widths']}."}


def memory(d: dict, out: Path) -> dict | None:
    """Where the memory goes, dense base vs chosen model: live activations along the network, parameter bytes
    per layer."""
    prof = d.get("profiles", {})
    if "chosen" not in prof:
        return None
    fig, (a1, a2) = _pyplot().subplots(1, 2, figsize=(11, 3.6))
    for key, color, name in (("dense", "C3", f"dense {d['dense']['arch']}"), ("chosen", "C0", f"trial {d['best']['trial']}")):
        p = prof[key]
        live = [b / 1024 for _, b in p["live"]]
        a1.plot(range(len(live)), live, color=color, lw=1.2,
                label=f"{name}: peak {p['peak_bytes'] / 1024:,.1f} KiB at {p['peak_at']} ({p['act_bits']}-bit)")
        i = [n for n, _ in p["live"]].index(p["peak_at"])
        a1.plot([i], [live[i]], "v", color=color, ms=7)
    a1.set(xlabel="operation in execution order (fx graph node)", ylabel="live activations (KiB, batch 1)")
    a1.legend(fontsize=7)
    layers = list(prof["dense"]["param_bytes"])
    x = range(len(layers))
    a2.bar([i - 0.2 for i in x], [prof["dense"]["param_bytes"][n] / 1024 for n in layers], 0.4, color="C3",
           label=f"dense: {sum(prof['dense']['param_bytes'].values()) / 1024:,.1f} KiB")
    chosen = prof["chosen"]["param_bytes"]
    a2.bar([i + 0.2 for i in x], [chosen.get(n, 0) / 1024 for n in layers], 0.4, color="C0",
           label=f"trial {d['best']['trial']}: {sum(chosen.values()) / 1024:,.1f} KiB")
    a2.set_xticks(list(x), layers, rotation=90, fontsize=5)
    a2.set(ylabel="parameter storage (KiB)", yscale="log")
    a2.legend(fontsize=7)
    paths = _save(fig, out, "memory")
    return {**paths, "caption": f"Left: bytes of live feature maps while each operation runs (fx-traced liveness, batch 1, "
                                f"at each model's activation bits; triangles mark the peak). Right: parameter storage per "
                                f"layer in its encoding (BN folded in the layer's row), dense base vs trial "
                                f"{d['best']['trial']} ({d['best']['label']})."}


def all_figures(d: dict, out: Path) -> dict:
    figs = {"pareto": pareto(d, out), "importances": importances(d, out), "bits": bits(d, out),
            "best_model": best_model(d, out), "memory": memory(d, out)}
    return {k: v for k, v in figs.items() if v}
