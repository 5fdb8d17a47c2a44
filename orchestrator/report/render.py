"""The report as one self-contained HTML page and an offline HTML slide deck (arrow keys; prints to PDF).

Figures are embedded as data URIs and no asset is fetched from the network, so both files work
offline and can be mailed as they are.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import yaml

from ..study.pareto import pct


def _kb(b: float) -> str:
    return f"{b / 1000:,.1f} KB" if b < 1e6 else f"{b / 1e6:,.2f} MB"


def _img(fig: dict) -> str:
    data = base64.b64encode(Path(fig["png"]).read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%">'
            f'<figcaption>{html.escape(fig["caption"])}</figcaption></figure>')


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def sections(d: dict, figs: dict, space_file: str, storage: str) -> list[tuple[str, str]]:
    """(title, html body) of each slide / report section, in talk order."""
    dn, env, sp = d["dense"], d["environment"], d["space"]
    setup = _table(["", ""], [
        ["question", "the best accuracy for the smallest memory footprint"],
        ["dataset", f"{sp['dataset']}; validation = last {sp['val_size']:,} training images; test reported, never selected on"
                    + (f" (caution: {html.escape(dn['val_warning'])})" if dn.get("val_warning") else "")],
        ["base model", f"{dn['arch']}: {dn['params']:,} parameters, validation {pct(dn['val_acc'])}, test {pct(dn['test_acc'])}"],
        ["budget", f"{len(d['rows'])} complete trials of {sp['budget']['trials']} ({d['counts']}), "
                   f"{d['hours']:.2f} trial-hours, sampler {sp['sampler']['name']}"],
        ["accuracy floor", (f"{len(d['rows']) - d['infeasible']} trials within {100 * sp['constraints']['max_accuracy_drop']:.0f} "
                            f"points of the base (validation); {d['infeasible']} below that floor, never on the front"
                            if sp.get("constraints", {}).get("max_accuracy_drop") else
                            f"none set in the space; budgets are answered within {100 * d['floor']:.0f} points")],
        ["hardware, versions", f"{env['device']}, {env['threads']} threads; torch {env['torch']}, "
                               f"orchestrator {env['orchestrator']}, python {env['python']}"],
    ])
    footprint = ("<p>Footprint = parameter storage (every tensor at its bit-width, in the cheapest of dense / bitmask / "
                 "relative-index encodings, per-channel scales included) + the peak of live activations for one image "
                 "(batch 1) at the model's activation bit-width. Measured on the exported file of every trial.</p>"
                 + _table(["model", "parameters", "peak activations", "total"],
                          [[f"dense {dn['arch']}", _kb(dn["param_bytes"]),
                            f"{_kb(dn['activation_peak_bytes'])} at {dn['activation_peak_at']}", _kb(dn["total_bytes"])]]
                          + [[f"chosen: trial {d['best']['trial']}", _kb(sum(c["param_bytes"].values())),
                              f"{_kb(c['peak_bytes'])} at {c['peak_at']} ({c['act_bits']}-bit)", _kb(c["total_bytes"])]
                             for c in [d["profiles"].get("chosen")] if c])
                 + (_img(figs["memory"]) if "memory" in figs else ""))
    methods = _table(["method", "what it does"], [[m, t] for m, t in d["methods"].items()])
    front_rows = [[r["trial"], r["proposed_by"], r["label"], pct(r["val_acc"]), pct(r["test_acc"]),
                   _kb(r["footprint_bytes"]), f"{r['compression']:.1f}x", realized_line(r.get("realized"))]
                  for r in d["front"]]
    pareto = _img(figs["pareto"]) + _table(["trial", "proposed by", "configuration", "val", "test", "footprint",
                                            "smaller by", "realized: zeros / weight bits per layer group"],
                                           front_rows)
    pareto += ("<p>Proposed by: <b>auto</b>, a start point of the budget solve over the base's per-group "
               "sensitivities; <b>start</b>, a start point written in the space; <b>warm-start:NAME</b>, the "
               "front of study NAME; <b>sampler</b>, the study's sampler.</p>")
    mattered = "".join(_img(figs[k]) for k in ("importances", "bits", "best_model") if k in figs)
    if d["kd"]:
        mattered += "<p>KD in fine-tunes: " + "; ".join(
            f"{'with' if k else 'without'} KD: best {pct(v['best'])}, mean {pct(v['mean'])} over {v['n']} trials"
            for k, v in d["kd"].items()) + "</p>"
    answer = _answer(d, space_file, storage)
    secs = [("The question and the setup", setup), ("The footprint", footprint), ("Methods compared", methods),
            ("The Pareto front", pareto)]
    if d.get("peers"):
        secs.append(("The peers on the same base", peers_section(d)))
    return secs + [("What mattered", mattered or "<p>Too few trials to say.</p>"), ("The answer", answer)]


def _answer(d: dict, space_file: str, storage: str) -> str:
    """The answer slide: the best model per footprint budget, the smallest within 1 point, how to reproduce."""
    answer_rows = []
    for a in d["answer"]:
        t = a["trial"]
        none = f"no trial within {100 * d['floor']:.0f} points of the base fits"
        answer_rows.append([a["budget"], none if t is None else f"{pct(t['val_acc'])} val, {pct(t['test_acc'])} test",
                            "" if t is None else f"trial {t['trial']}: {t['label']} ({_kb(t['footprint_bytes'])})"])
    s = d["smallest_near_dense"]
    near = ("no trial within 1 point of the dense model" if s is None else
            f"smallest footprint within 1 point of the dense model: trial {s['trial']} ({s['label']}), "
            f"{_kb(s['footprint_bytes'])} = {s['compression']:.1f}x smaller, {pct(s['val_acc'])} val / {pct(s['test_acc'])} test")
    repro = (f"<pre>orchestrator study run {html.escape(space_file)} --storage {html.escape(storage)}\n"
             f"orchestrator report {html.escape(space_file)} --storage {html.escape(storage)}</pre>")
    if s is not None and d["pipelines"].get(s["trial"]):  # the full YAML in the report; slides keep one line
        repro += ("<div class='report-only'><p>That trial alone: save this as pipeline.yaml and run "
                  "<code>orchestrator pipeline pipeline.yaml</code>:</p><pre>"
                  + html.escape(yaml.safe_dump(d["pipelines"][s["trial"]], sort_keys=False)) + "</pre></div>")
    return _table(["footprint budget", "best accuracy (selected on validation)", "trial"], answer_rows) + \
        f"<p><b>{html.escape(near)}</b></p>" + repro


def peers_section(d: dict) -> str:
    """The peers' points against the front: each one's sizes, accuracies, CPU minutes and dominating trial."""
    base = d["dense"]["test_acc"]
    rows = [[p["tool"], p["point"], pct(p["val_acc"]), pct(p["test_acc"]),
             "" if base is None else f"{100 * (p['test_acc'] - base):+.2f}", _kb(p["footprint_bytes"]),
             f"{p['compression']:.1f}x", f"{p['cpu_minutes']:.1f}",
             "not dominated" if p["dominated_by"] is None else f"trial {p['dominated_by']}"] for p in d["peers"]]
    wins = sum(p["dominated_by"] is None for p in d["peers"])
    return (f"<p>{html.escape(d['peer_lines'][0])}</p>"
            + _table(["tool", "point", "val", "test", "vs base (test)", "footprint", "smaller by", "CPU min",
                      "dominated by"], rows)
            + f"<p><b>{len(d['peers']) - wins} of {len(d['peers'])} peer points are dominated by the front"
              f"{'' if not wins else f'; {wins} not'}.</b></p>")


CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.5em 0}"
       "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}figcaption{font-size:12px;color:#555}"
       "pre{background:#f5f5f5;padding:8px;font-size:12px;overflow-x:auto}")


def realized_line(realized: dict | None) -> str:
    """Per layer group: the fraction of zero weights and the weight bits, e.g. 'stage1 52%/4b'."""
    if not realized:
        return ""
    sp, bits = realized.get("sparsity", {}), realized.get("bits", {})
    return ", ".join(f"{g} {100 * sp[g]:.0f}%/{bits.get(g, 32)}b" for g in sp)


def report_html(d: dict, secs: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{i + 1}. {html.escape(t)}</h2>{b}" for i, (t, b) in enumerate(secs))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {html.escape(d['study'])}</title>"
            f"<style>{CSS}</style></head><body><h1>Study {html.escape(d['study'])}: accuracy vs memory footprint</h1>"
            f"<p>Generated {d['generated']} from the study's records.</p>{body}"
            f"<script type='application/json' id='data'>{html.escape(json.dumps(_numbers(d)))}</script></body></html>")


def slides_html(d: dict, secs: list[tuple[str, str]]) -> str:
    title = (f"<section><h1>{html.escape(d['study'])}</h1><p>What is the best accuracy with the smallest memory "
             f"footprint for a CNN on {html.escape(d['space']['dataset'])}?</p><p>{d['generated']}</p></section>")
    slides = title + "".join(f"<section><h2>{html.escape(t)}</h2>{b}</section>" for t, b in secs)
    css = CSS + (".report-only{display:none}section{display:none;min-height:90vh}section.on{display:block}"
                 "@media print{section{display:block;page-break-after:always;min-height:0}}")
    js = ("var s=document.querySelectorAll('section'),i=0;function show(){s.forEach(function(e,k){e.className=k==i?'on':''});"
          "location.hash=i+1}document.addEventListener('keydown',function(e){if(['ArrowRight','PageDown',' '].indexOf(e.key)>=0)"
          "i=Math.min(i+1,s.length-1);if(['ArrowLeft','PageUp'].indexOf(e.key)>=0)i=Math.max(i-1,0);show()});"
          "i=Math.max(0,Math.min(s.length-1,(parseInt(location.hash.slice(1))||1)-1));show();")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(d['study'])} slides</title>"
            f"<style>{css}</style></head><body>{slides}<script>{js}</script></body></html>")


def _numbers(d: dict) -> dict:
    """The numbers the pages show, machine-readable (tests compare them with the study)."""
    return {"front": [{"trial": r["trial"], "proposed_by": r["proposed_by"],
                       "val_acc": r["val_acc"], "test_acc": r["test_acc"],
                       "footprint_bytes": r["footprint_bytes"]} for r in d["front"]],
            "peers": [{k: p[k] for k in ("tool", "point", "val_acc", "test_acc", "footprint_bytes", "cpu_minutes",
                                         "dominated_by")} for p in d.get("peers", [])],
            "dense": d["dense"], "answer": [{"budget": a["budget"], "trial": a["trial"]["trial"] if a["trial"] else None}
                                            for a in d["answer"]]}
