"""Pareto export: the front as CSV and Markdown tables, a PNG, and a self-contained interactive HTML.

Accuracy is the validation accuracy the study optimized; the test accuracy of every trial
(measured on its exported file) is reported beside it, never used for selection.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

from .peers import PEER_MARKERS, by_tool, compare, load_peers, markdown, study_minutes


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
                   + (" mse" if p.get("weight_scale") == "mse" else "") + (f" qat{q_epochs:g}" if q_epochs else " ptq"))
    if p.get("kd") and any(p.get(k) for k in ("finetune_epochs", "quant_epochs", "channel_epochs")):
        out.append("kd")
    return " ".join(out) or "dense base"


def pct(x) -> str:
    """An accuracy as a percentage, "n/a" when not measured (test accuracy: final front trials only)."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


def feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def ran(t) -> bool:
    """A complete trial that ran its pipeline (a repeat of a finished configuration, answered from that
    trial's record, is COMPLETE too but ran nothing)."""
    return t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs


def failed_own(t) -> bool:
    """A trial that failed for a reason of its own: it counts against the budget and is not retried (a trial
    lost with a killed worker, or one failed for an environmental reason, is retried instead)."""
    return t.state.name == "FAIL" and "fail_reason" in t.user_attrs and not t.user_attrs.get("environmental")


TEST_ATTR = "test_acc:"  # + trial number: a study attribute, the test accuracy measured for the final front


def rows(study) -> list[dict]:
    """One row per complete trial (repeats of a finished configuration left out), with `feasible` (the
    space's accuracy floor) and `pareto` marking the front among the feasible trials. `test_acc` is None
    for a trial that was never on a final front (`runner.test_front`)."""
    trials = [t for t in study.get_trials(deepcopy=False) if ran(t)]
    tested = study.user_attrs
    out = []
    for t in trials:
        a, p = t.user_attrs, t.params
        test = a.get("test_acc")
        out.append({"trial": t.number, "feasible": feasible(t), "label": label(p), **p,
                    "proposed_by": a.get("proposed_by", "sampler"), "val_acc": a.get("val_acc"),
                    "test_acc": tested.get(f"{TEST_ATTR}{t.number}") if test is None else test,
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


COLUMNS = ["trial", "pareto", "feasible", "proposed_by", "label", "val_acc", "test_acc", "footprint_bytes", "param_bytes",
           "activation_peak_bytes", "macs", "compression", "mlflow_run_id"]


def write_tables(data: list[dict], out_dir: Path, peer_lines: list[str] = ()) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "pareto.csv", out_dir / "pareto.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(data)
    lines = ["| trial | proposed by | configuration | val acc | test acc | footprint (bytes) | parameters | activations "
             "| compression |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in data:
        if r["pareto"]:
            lines.append(f"| {r['trial']} | {r['proposed_by']} | {r['label']} | {100 * r['val_acc']:.2f}% | {pct(r['test_acc'])} | "
                         f"{r['footprint_bytes']:,.0f} | {r['param_bytes']:,.0f} | {r['activation_peak_bytes']:,.0f} | "
                         f"{r['compression']:.1f}x |")
    md_path.write_text("\n".join([*lines, *([""] + list(peer_lines) if peer_lines else [])]) + "\n")
    return csv_path, md_path


def plot_png(data: list[dict], path: Path, title: str, footer: str, peers: list[dict] = ()) -> Path:
    from ..plots import _pyplot, _save

    fig, ax = _pyplot().subplots(figsize=(7.5, 4.8))
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
    plot_peers(ax, peers)
    if data:
        ax.scatter([data[0]["base_footprint_bytes"]], [100 * data[0]["base_val_acc"]], marker="*", s=120, color="C3",
                   label="dense base model", zorder=5)
    ax.set_xscale("log")
    ax.set(xlabel="total footprint: parameters + peak activations (bytes, log scale)",
           ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path, footer)


def plot_peers(ax, peers) -> None:
    """The peers' points on a matplotlib axis (accuracy on the validation split, as the front's): black outlines,
    one marker shape per tool."""
    for i, (tool, ps) in enumerate(by_tool(list(peers)).items()):
        ax.scatter([p["footprint_bytes"] for p in ps], [100 * p["val_acc"] for p in ps], s=28, facecolors="none",
                   edgecolors="k", marker=PEER_MARKERS[i % len(PEER_MARKERS)], label=f"peer: {tool}", zorder=4)


def plot_html(data: list[dict], path: Path, title: str, footer: str, peers: list[dict] = ()) -> Path:
    """The interactive page: a plotly scatter (zoom, hover, legend toggles; plotly.js embedded, so it works
    offline) of every trial, the front and each method's best-at-each-size staircase, then the front's table."""
    import plotly.graph_objects as go

    def hover(r):
        return (f"trial {r['trial']}: {html.escape(r['label'])}<br>val {100 * r['val_acc']:.2f}%, "
                f"test {pct(r['test_acc'])}<br>footprint {r['footprint_bytes']:,.0f} B "
                f"({r['compression']:.1f}x smaller)")

    fig = go.Figure()
    for name, keep, style in (("Pareto front (feasible)", lambda r: r["pareto"], dict(color="#1f77b4", size=9)),
                              ("dominated", lambda r: r["feasible"] and not r["pareto"], dict(color="#888", size=7,
                                                                                              opacity=0.5)),
                              ("infeasible (below the accuracy floor)", lambda r: not r["feasible"],
                               dict(color="#bbb", size=7, opacity=0.4))):
        rs = [r for r in data if keep(r)]
        fig.add_trace(go.Scatter(x=[r["footprint_bytes"] for r in rs], y=[100 * r["val_acc"] for r in rs],
                                 mode="markers", name=f"{name}: {len(rs)}", marker=style,
                                 hovertext=[hover(r) for r in rs], hoverinfo="text"))
    front = sorted((r for r in data if r["pareto"]), key=lambda r: r["footprint_bytes"])
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[r["footprint_bytes"] for r in front], y=[100 * r["val_acc"] for r in front],
                                 mode="lines", line=dict(color="#1f77b4", shape="hv"), name="front", hoverinfo="skip"))
    for method, curve in method_curves(data).items():
        fig.add_trace(go.Scatter(x=[x for x, _ in curve], y=[100 * y for _, y in curve], mode="lines",
                                 line=dict(shape="hv", width=1), opacity=0.7, hoverinfo="skip",
                                 name=f"{method}: best at each size", visible="legendonly"))
    for tool, ps in by_tool(list(peers)).items():
        fig.add_trace(go.Scatter(
            x=[p["footprint_bytes"] for p in ps], y=[100 * p["val_acc"] for p in ps], mode="markers",
            name=f"peer: {tool}", marker=dict(symbol="diamond-open", size=10, color="#222"), hoverinfo="text",
            hovertext=[f"{html.escape(tool)}: {html.escape(p['point'])}<br>val {100 * p['val_acc']:.2f}%, test "
                       f"{100 * p['test_acc']:.2f}%<br>footprint {p['footprint_bytes']:,.0f} B, {p['cpu_minutes']:.1f} "
                       f"CPU min" for p in ps]))
    if data:
        fig.add_trace(go.Scatter(x=[data[0]["base_footprint_bytes"]], y=[100 * data[0]["base_val_acc"]],
                                 mode="markers", marker=dict(symbol="star", size=14, color="#d62728"),
                                 name="dense base model", hovertext=["dense base model"], hoverinfo="text"))
    fig.update_layout(title=title, template="plotly_white", height=560, legend=dict(orientation="h", y=-0.2),
                      xaxis=dict(type="log", title="total footprint: parameters + peak activations (bytes, log scale)"),
                      yaxis=dict(title="validation accuracy (%)"))
    table = "".join(f"<tr><td>{r['trial']}</td><td>{html.escape(r['label'])}</td><td>{100 * r['val_acc']:.2f}%</td>"
                    f"<td>{pct(r['test_acc'])}</td><td>{r['footprint_bytes']:,.0f}</td></tr>" for r in front)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif'>{fig.to_html(full_html=False, include_plotlyjs=True)}"
            f"<table border='1' cellpadding='4'><tr><th>trial</th><th>configuration</th><th>val</th><th>test</th>"
            f"<th>footprint (B)</th></tr>{table}</table>"
            f"<p style='color:#666;font-size:11px'>{html.escape(footer)}</p></body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def export_pareto(study, out_dir, footer: str, peers_file=None) -> list[Path]:
    """`peers_file`: peer points on the same base (`benchmarks/peers.py`), put in the same table and plots."""
    out_dir = Path(out_dir)
    data = rows(study)
    peers, peer_lines = with_peers(study, data, peers_file)
    csv_path, md_path = write_tables(data, out_dir, peer_lines)
    title = f"study {study.study_name}: accuracy vs memory footprint ({len(data)} trials)"
    png = plot_png(data, out_dir / "pareto.png", title, footer, peers)
    page = plot_html(data, out_dir / "pareto.html", title, footer, peers)
    return [csv_path, md_path, png, page]


def with_peers(study, data: list[dict], peers_file) -> tuple[list[dict], list[str]]:
    """The peers of `peers_file` checked against the study's base, each with its dominating front trial, and
    their Markdown rows; nothing without a file."""
    if peers_file is None or not data:
        return [], []
    peers = compare(load_peers(peers_file, data[0]["base_footprint_bytes"], data[0]["base_test_acc"]),
                    [r for r in data if r["pareto"]])
    return peers, markdown(peers, data[0]["base_test_acc"], study_minutes(study))
