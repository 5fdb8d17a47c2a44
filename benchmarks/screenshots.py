"""Screenshots for the docs in a real browser: the MLflow UI on a study's experiment and its report slides.

Needs Playwright driving the system Chromium (no browser download):
    apt-get install chromium && .venv/bin/pip install playwright
    .venv/bin/python benchmarks/screenshots.py quick-cpu mlflow.db runs/studies/quick-cpu/report docs/img
Starts `mlflow server` on the SQLite store, opens the shared runs view the study wrote (trials table,
accuracy-vs-footprint charts), the study run (its description links the views), a front trial's run,
and the registered models page, then the first slides of the report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright


def api(base: str, path: str, **params) -> dict:
    query = "&".join(f"{k}={urllib.parse.quote(str(v))}" for k, v in params.items())
    return json.load(urllib.request.urlopen(f"{base}/api/2.0/mlflow/{path}?{query}"))


def start_server(db: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{db.resolve()}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(90):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"mlflow server on port {port} did not start")


def shot(page, url: str, out: Path, wait_ms: int = 6000) -> None:
    page.goto("about:blank")  # a new document: a deck reads its #N only when it loads
    page.goto(url)
    page.wait_for_timeout(wait_ms)
    for label in ("Close", "Dismiss"):  # side panels and banners that hide the runs
        for button in page.get_by_role("button", name=label).all():
            if button.is_visible():
                button.click()
    page.wait_for_timeout(800)
    page.screenshot(path=str(out))
    print(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("mlflow_db", type=Path)
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--port", type=int, default=5077)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    server = start_server(a.mlflow_db, a.port)
    base = f"http://127.0.0.1:{a.port}"
    try:
        exp = api(base, "experiments/get-by-name", experiment_name=a.study)["experiment"]
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        key = next(k.split(".", 2)[2] for k in tags if k.startswith("mlflow.sharedViewState."))
        view = f"{base}/#/experiments/{exp['experiment_id']}/runs?viewStateShareKey={key}&workflowType=machine_learning"
        runs = json.load(urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 500}).encode())))["runs"]
        kind = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
        parent = next(r for r, t in kind.items() if t.get("orchestrator.kind") == "study")
        front = [r for r, t in kind.items() if t.get("orchestrator.pareto") == "true"]
        versions = api(base, "model-versions/search", max_results=50).get("model_versions", [])
        registered = [v["run_id"] for v in versions if v.get("run_id") in kind]
        front = registered[:1] + front  # the registered front model first
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1800, "height": 950})
            shot(page, view + "&compareRunsMode=TABLE", a.out_dir / "mlflow_trials_table.png")
            shot(page, view + "&compareRunsMode=CHART", a.out_dir / "mlflow_accuracy_vs_footprint.png")
            ml = "?workflowType=machine_learning"  # the training-runs layout, not the GenAI one
            shot(page, f"{base}/#/experiments/{exp['experiment_id']}/runs/{parent}{ml}", a.out_dir / "mlflow_study_run.png")
            if front:
                shot(page, f"{base}/#/experiments/{exp['experiment_id']}/runs/{front[0]}{ml}",
                     a.out_dir / "mlflow_front_trial.png")
            mine = [v for v in versions if v.get("run_id") in kind]
            shot(page, f"{base}/#/models/{mine[0]['name']}/versions/{mine[0]['version']}" if mine else f"{base}/#/models",
                 a.out_dir / "mlflow_registered_model.png", 4000)
            page.set_viewport_size({"width": 1600, "height": 900})
            for i in (1, 2, 5, 7):
                shot(page, f"file://{a.report_dir.resolve()}/slides.html#{i}", a.out_dir / f"slide{i}.png", 1500)
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
