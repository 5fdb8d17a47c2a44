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
        assert f["test_acc"] == t.user_attrs["test_acc"]
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
