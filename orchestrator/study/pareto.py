"""Pareto export: the front as CSV and Markdown tables, a PNG, and a self-contained interactive HTML.

Accuracy is the validation accuracy the study optimized; the test accuracy of every trial
(measured on its exported file) is reported beside it, never used for selection.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path


def label(p: dict) -> str:
    """A compact one-line configuration from a trial's parameters (the full pipeline is in its record)."""
    method = p.get("method", "none")
    out = []
    if p.get("channel_ratio"):
        out.append(f"ch{p['channel_ratio']:.2f}" + (f"+{p['channel_epochs']:g}ep" if p.get("channel_epochs") else ""))
    if method != "none":
        scales = [f"{k[len('scale_'):].replace('stage', 's')}x{v:g}" for k, v in p.items() if k.startswith("scale_")]
        out.append(f"{method} r={p['ratio']:.2f}" + (f" ({' '.join(scales)})" if scales else ""))
        if p.get("finetune_epochs"):
            out.append(f"ft{p['finetune_epochs']:g}")
    bits, act = p.get("bits", 32), p.get("act_bits", 32)
    if bits < 32 or act < 32:
        group = [f"{k[len('bits_'):].replace('stage', 's')}:{v}" for k, v in p.items() if k.startswith("bits_")]
        group += [f"{k[len('act_'):].replace('stage', 's')}:a{v}" for k, v in p.items()
                  if k.startswith("act_") and k != "act_bits"]
        q_epochs = p.get("quant_epochs", p.get("finetune_epochs", 0))
        out.append(f"w{bits}" + (f"a{act}" if act < 32 else "") + (f" ({' '.join(group)})" if group else "")
                   + (f" qat{q_epochs:g}" if q_epochs else " ptq"))
    if p.get("kd") and any(p.get(k) for k in ("finetune_epochs", "quant_epochs", "channel_epochs")):
        out.append("kd")
    return " ".join(out) or "dense base"


def feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def rows(study) -> list[dict]:
    """One row per complete trial (repeats of a finished configuration left out), with `feasible` (the
    space's accuracy floor) and `pareto` marking the front among the feasible trials."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    out = []
    for t in trials:
        a, p = t.user_attrs, t.params
        out.append({"trial": t.number, "feasible": feasible(t), "label": label(p), **p,
                    "val_acc": a.get("val_acc"), "test_acc": a.get("test_acc"),
                    "footprint_bytes": a.get("total_bits", 0) / 8, "param_bytes": a.get("param_bits", 0) / 8,
                    "activation_peak_bytes": a.get("activation_peak_bits", 0) / 8, "macs": a.get("macs_sparse"),
                    "compression": a.get("compression"), "base_val_acc": a.get("base_val_acc"),
                    "base_test_acc": a.get("base_test_acc"), "base_footprint_bytes": a.get("base_total_bits", 0) / 8,
                    "realized": a.get("realized"), "mlflow_run_id": a.get("mlflow_run_id")})
    signs = [1 if d.name == "MAXIMIZE" else -1 for d in study.directions]
    by_number = {t.number: [s * v for s, v in zip(signs, t.values)] for t in trials}  # larger is better
    front = set(non_dominated([r["trial"] for r in out if r["feasible"]], by_number))
    for r in out:
        r["pareto"] = r["trial"] in front
    return sorted(out, key=lambda r: r["footprint_bytes"])


def non_dominated(keys: list, values: dict) -> list:
    """The keys whose objective vectors (`values[key]`, larger is better) no other key's dominates."""
    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and a != b

    return [k for k in keys if not any(dominates(values[o], values[k]) for o in keys)]


def envelope(rs: list[dict]) -> list[tuple[float, float]]:
    """The best accuracy reachable at or below each footprint: a method's own Pareto front (its corners)."""
    out, best = [], -1.0
    for r in sorted(rs, key=lambda r: r["footprint_bytes"]):
        if r["val_acc"] > best:
            best = r["val_acc"]
            out.append((r["footprint_bytes"], r["val_acc"]))
    return out


def method_curves(data: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per pruning method (the seed's methods among them), its envelope over the study's feasible trials."""
    per_method: dict = {}
    for r in data:
        if r["feasible"]:
            per_method.setdefault(r.get("method", "none"), []).append(r)
    return {m: envelope(rs) for m, rs in sorted(per_method.items())}


COLUMNS = ["trial", "pareto", "feasible", "label", "val_acc", "test_acc", "footprint_bytes", "param_bytes",
           "activation_peak_bytes", "macs", "compression", "mlflow_run_id"]


def write_tables(data: list[dict], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "pareto.csv", out_dir / "pareto.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(data)
    lines = ["| trial | configuration | val acc | test acc | footprint (bytes) | parameters | activations | compression |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in data:
        if r["pareto"]:
            lines.append(f"| {r['trial']} | {r['label']} | {100 * r['val_acc']:.2f}% | {100 * r['test_acc']:.2f}% | "
                         f"{r['footprint_bytes']:,.0f} | {r['param_bytes']:,.0f} | {r['activation_peak_bytes']:,.0f} | "
                         f"{r['compression']:.1f}x |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_png(data: list[dict], path: Path, title: str, footer: str) -> Path:
    from ..plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    dom = [r for r in data if not r["pareto"] and r["feasible"]]
    bad = [r for r in data if not r["feasible"]]
    front = [r for r in data if r["pareto"]]
    ax.scatter([r["footprint_bytes"] for r in dom], [100 * r["val_acc"] for r in dom], s=14, color="0.6",
               alpha=0.35, label="dominated trials")
    if bad:
        ax.scatter([r["footprint_bytes"] for r in bad], [100 * r["val_acc"] for r in bad], s=14, marker="x",
                   color="0.75", label=f"infeasible: below the accuracy floor ({len(bad)})")
    ax.plot([r["footprint_bytes"] for r in front], [100 * r["val_acc"] for r in front], "o", color="C0", ms=5,
            label="Pareto front (validation, feasible)")
    ax.step([r["footprint_bytes"] for r in front], [100 * r["val_acc"] for r in front], where="post", color="C0")
    for i, (method, pts) in enumerate(method_curves(data).items()):
        ax.step([p[0] for p in pts], [100 * p[1] for p in pts], where="post", lw=1, color=f"C{(i + 1) % 10}",
                alpha=0.7, label=f"{method}: best at each footprint")
    for r in front:
        ax.annotate(r["label"], (r["footprint_bytes"], 100 * r["val_acc"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    if data:
        ax.scatter([data[0]["base_footprint_bytes"]], [100 * data[0]["base_val_acc"]], marker="*", s=120, color="C3",
                   label="dense base model", zorder=5)
    ax.set_xscale("log")
    ax.set(xlabel="total footprint: parameters + peak activations (bytes, log scale)",
           ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path, footer)


def staircase(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Corner points of a front drawn as steps: each accuracy holds until the next, larger footprint."""
    out = []
    for i, (x, y) in enumerate(points):
        if i:
            out.append((x, points[i - 1][1]))
        out.append((x, y))
    return out


def plot_html(data: list[dict], path: Path, title: str, footer: str) -> Path:
    """A dependency-free interactive page: an SVG scatter whose points show their trial on hover."""
    w, h, m = 860, 520, 60
    xs = [r["footprint_bytes"] for r in data] + ([data[0]["base_footprint_bytes"]] if data else [])
    ys = [100 * r["val_acc"] for r in data] + ([100 * data[0]["base_val_acc"]] if data else [])
    lx0, lx1 = (math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1) if xs else (0, 1)
    y0, y1 = (min(ys) - 2, max(ys) + 2) if ys else (0, 100)

    def px(x):
        return m + (math.log10(x) - lx0) / (lx1 - lx0 or 1) * (w - 2 * m)

    def py(y):
        return h - m - (y - y0) / (y1 - y0 or 1) * (h - 2 * m)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>']
    for e in range(math.ceil(lx0), math.floor(lx1) + 1):
        x = m + (e - lx0) / (lx1 - lx0) * (w - 2 * m)
        parts.append(f'<line x1="{x:.1f}" y1="{m}" x2="{x:.1f}" y2="{h - m}" stroke="#ddd"/>'
                     f'<text x="{x:.1f}" y="{h - m + 16}" text-anchor="middle">1e{e} B</text>')
    for k in range(6):
        y = y0 + k * (y1 - y0) / 5
        parts.append(f'<text x="{m - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.1f}%</text>')
    colors = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    curves = method_curves(data)
    for i, (method, curve) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        pts = " ".join(f"{px(x):.1f},{py(100 * y):.1f}" for x, y in staircase(curve))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-opacity="0.7"/>'
                     f'<text x="{w - m - 6}" y="{h - m - 8 - 14 * (len(curves) - 1 - i)}" text-anchor="end" fill="{c}">{html.escape(method)}: best at each size</text>')
    front = [r for r in data if r["pareto"]]
    if len(front) > 1:
        pts = " ".join(f"{px(x):.1f},{py(100 * y):.1f}"
                       for x, y in staircase([(r["footprint_bytes"], r["val_acc"]) for r in front]))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4"/>')
    for r in data:
        tip = html.escape(f"trial {r['trial']}: {r['label']}\nval {100 * r['val_acc']:.2f}%, test {100 * r['test_acc']:.2f}%"
                          f"\nfootprint {r['footprint_bytes']:,.0f} B ({r['compression']:.1f}x smaller)")
        color, opacity = ("#1f77b4", 1.0) if r["pareto"] else ("#888", 0.4) if r["feasible"] else ("#bbb", 0.3)
        parts.append(f'<circle cx="{px(r["footprint_bytes"]):.1f}" cy="{py(100 * r["val_acc"]):.1f}" r="5" '
                     f'fill="{color}" fill-opacity="{opacity}"><title>{tip}</title></circle>')
    if data:
        parts.append(f'<text x="{px(data[0]["base_footprint_bytes"]):.1f}" y="{py(100 * data[0]["base_val_acc"]) + 5:.1f}" '
                     f'text-anchor="middle" font-size="18" fill="#d62728">&#9733;<title>dense base model</title></text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">total footprint (bytes, log scale)</text></svg>')
    table = "".join(f"<tr><td>{r['trial']}</td><td>{html.escape(r['label'])}</td><td>{100 * r['val_acc']:.2f}%</td>"
                    f"<td>{100 * r['test_acc']:.2f}%</td><td>{r['footprint_bytes']:,.0f}</td></tr>" for r in front)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h2>{html.escape(title)}</h2><p>Hover a point for its trial. Blue: Pareto front (feasible trials); grey: "
            f"dominated; light grey: infeasible ({sum(not r['feasible'] for r in data)} trials below the accuracy floor); "
            f"star: dense base model.</p>{''.join(parts)}<table border='1' cellpadding='4'><tr><th>trial</th>"
            f"<th>configuration</th><th>val</th><th>test</th><th>footprint (B)</th></tr>{table}</table>"
            f"<p style='color:#666;font-size:11px'>{html.escape(footer)}</p></body></html>")
    path.write_text(page)
    return path


def export_pareto(study, out_dir, footer: str) -> list[Path]:
    out_dir = Path(out_dir)
    data = rows(study)
    csv_path, md_path = write_tables(data, out_dir)
    title = f"study {study.study_name}: accuracy vs memory footprint ({len(data)} trials)"
    png = plot_png(data, out_dir / "pareto.png", title, footer)
    page = plot_html(data, out_dir / "pareto.html", title, footer)
    return [csv_path, md_path, png, page]
