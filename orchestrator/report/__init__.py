"""`report`: a study's presentation material (HTML report, offline slides, figures), from its records."""

from __future__ import annotations

import json
from pathlib import Path

from .collect import collect
from .figures import all_figures
from .render import _numbers, report_html, sections, slides_html


def build_report(study, space, out_dir, *, space_file: str, storage: str, peers_file=None) -> dict:
    """Write report.html, slides.html, figures (PNG + SVG) and numbers.json under `out_dir`; `peers_file`:
    peer points on the same base (`benchmarks/peers.py`), in the Pareto figure and a section of their own."""
    from ..study.pareto import with_peers

    d = collect(study, space)
    d["peers"], d["peer_lines"] = with_peers(study, d["rows"], peers_file)  # checked before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = all_figures(d, out / "figures")
    secs = sections(d, figs, space_file, storage)
    (out / "report.html").write_text(report_html(d, secs))
    (out / "slides.html").write_text(slides_html(d, secs))
    (out / "numbers.json").write_text(json.dumps(_numbers(d), indent=1, default=str))
    files = [out / "report.html", out / "slides.html", out / "numbers.json"]
    files += [Path(p) for f in figs.values() for k, p in f.items() if k in ("png", "svg")]
    return {"files": files, "data": d}


__all__ = ["build_report"]
