import json
import re

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.report import build_report
from orchestrator.study import load_space, run_study
from orchestrator.study.runner import open_study
from conftest import one_line_error, run
from conftest import space_file


@pytest.fixture
def study(base, cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = space_file(tmp_path, base, dimensions={"method": ["none", "global_magnitude", "l1_filter"],
                                                  "ratio": [0.3, 0.7], "bits": [32, 4], "finetune_epochs": [0]},
                      budget={"trials": 5})
    storage = f"sqlite:///{tmp_path}/o.db"
    st = run_study(load_space(path), storage=storage, data_dir=cifar10_dir, out_dir=tmp_path / "s",
                   tracking_uri=f"sqlite:///{tmp_path}/m.db")
    return path, storage, st


def test_report_builds_and_its_numbers_are_the_studys(study, tmp_path):
    path, storage, st = study
    out = tmp_path / "report"
    r = run("report", path, "--storage", storage, "--mlflow", f"sqlite:///{tmp_path}/m.db", "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("report.html", "slides.html", "figures/pareto.png", "figures/pareto.svg"):
        assert (out / name).stat().st_size > 500
    numbers = json.loads((out / "numbers.json").read_text())
    front = {t.number: t for t in st.best_trials}
    assert {f["trial"] for f in numbers["front"]} == set(front)
    for f in numbers["front"]:
        t = front[f["trial"]]
        assert f["val_acc"] == t.values[0] and f["footprint_bytes"] == t.values[1]
        assert f["test_acc"] == st.user_attrs[f"test_acc:{t.number}"]  # measured for the final front
    page = (out / "report.html").read_text()
    for f in numbers["front"]:
        assert f"{100 * f['val_acc']:.2f}%" in page
    for name in ("report.html", "slides.html"):
        text = (out / name).read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text) and "https://" not in text
    slides = (out / "slides.html").read_text()
    assert slides.count("<section>") == 7 and "ArrowRight" in slides and "@media print" in slides


def test_report_errors(study, tmp_path, base):
    path, storage, _ = study
    one_line_error(run("report", path, "--storage", f"sqlite:///{tmp_path}/other.db"), "no study named 'tiny'")
    empty = space_file(tmp_path, base, name="empty")
    open_study(load_space(empty), storage)  # created, never run
    with pytest.raises(OrchestratorError, match="no finished trial"):
        build_report(open_study(load_space(empty), storage, create=False), load_space(empty), tmp_path / "r",
                     space_file=str(empty), storage=storage)


def _peers_file(tmp_path, st, points, base_bits_offset=0):
    """A peers file on the study's base (or, with an offset, on another one) holding `points`."""
    a = next(t for t in st.trials if t.state.name == "COMPLETE").user_attrs
    base = {"point": "base", "tool": "base", "val_acc": a["base_val_acc"], "test_acc": a["base_test_acc"],
            "cpu_minutes": 0.0, "total_bits": a["base_total_bits"] + base_bits_offset}
    path = tmp_path / "peers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [base, *points]))
    return path


def test_peer_points_go_in_the_pareto_table_plot_and_report_each_with_the_trial_that_dominates_it(study, tmp_path):
    from orchestrator.study.pareto import rows

    path, storage, st = study
    front = [r for r in rows(st) if r["pareto"]]
    big = max(r["footprint_bytes"] for r in front)
    smallest = min(front, key=lambda r: r["footprint_bytes"])
    peers = _peers_file(tmp_path, st, [  # one that every front point beats, one that none can (1 byte, 100%)
        {"point": "p-big", "tool": "ToolA", "val_acc": 0.0, "test_acc": 0.0, "cpu_minutes": 2.5, "total_bits": 8 * big + 8},
        {"point": "p-tiny", "tool": "ToolB", "val_acc": 1.0, "test_acc": 1.0, "cpu_minutes": 0.5, "total_bits": 8}])
    r = run("study", "pareto", path, "--storage", storage, "--out", tmp_path / "p", "--peers", peers)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "p" / "pareto.md").read_text()
    assert f"| ToolA | p-big | 0.00% | 0.00% |" in md and md.split("p-big")[1].splitlines()[0].endswith(
        f"| 2.5 | trial {smallest['trial']} |")
    assert md.split("p-tiny")[1].splitlines()[0].endswith("| 0.5 | **not dominated** |")
    assert "peer: ToolA" in (tmp_path / "p" / "pareto.html").read_text()
    out = tmp_path / "report"
    r = run("report", path, "--storage", storage, "--out", out, "--peers", peers)
    assert r.exit_code == 0, r.output
    numbers = json.loads((out / "numbers.json").read_text())
    assert [(p["point"], p["dominated_by"]) for p in numbers["peers"]] == [("p-tiny", None), ("p-big", smallest["trial"])]
    assert "1 of 2 peer points are dominated by the front; 1 not." in (out / "report.html").read_text()
    assert (out / "slides.html").read_text().count("<section>") == 8


def test_a_peers_file_of_another_base_or_a_bad_line_is_one_line_error_before_any_file(study, tmp_path):
    path, storage, st = study
    peer = {"point": "p", "tool": "T", "val_acc": 0.5, "test_acc": 0.5, "cpu_minutes": 1.0, "total_bits": 800}
    other = _peers_file(tmp_path, st, [peer], base_bits_offset=8)
    for cmd in (["study", "pareto"], ["report"]):
        out = tmp_path / "o"
        one_line_error(run(*cmd, path, "--storage", storage, "--out", out, "--peers", other), "measured on another base")
        assert not out.exists()
    bad = _peers_file(tmp_path, st, [peer])
    bad.write_text(bad.read_text() + "{not json\n")
    one_line_error(run("report", path, "--storage", storage, "--out", tmp_path / "o", "--peers", bad), "line 3 is not JSON")
    bad.write_text(bad.read_text().replace("{not json", json.dumps({**peer, "test_acc": "high"})))
    one_line_error(run("study", "pareto", path, "--storage", storage, "--peers", bad), "line 3 has test_acc='high'")
    bad.write_text(bad.read_text().replace('"high"', "NaN"))
    one_line_error(run("study", "pareto", path, "--storage", storage, "--peers", bad), "line 3 has test_acc=nan")
    bad.write_text(bad.read_text().replace('"point": "p"', '"point": 7'))
    one_line_error(run("study", "pareto", path, "--storage", storage, "--peers", bad), "line 2 has point=7")
    bad.write_text(bad.read_text().replace('"point": 7', '"point": "p"').replace("NaN", "85.1"))
    one_line_error(run("study", "pareto", path, "--storage", storage, "--peers", bad), "line 3 has test_acc=85.1")
    bad.write_text(json.dumps({"point": "base"}) + "\n")
    one_line_error(run("study", "pareto", path, "--storage", storage, "--peers", bad), "line 1 lacks tool")
    one_line_error(run("report", path, "--storage", storage, "--peers", tmp_path / "nope.jsonl"), "cannot read it")
