#!/usr/bin/env bash
# Screenshots for the docs with headless Chromium (Debian package `chromium`):
#   the MLflow UI on the study's experiment, and the first slides of its report.
#   bash benchmarks/screenshots.sh STUDY_NAME MLFLOW_DB REPORT_DIR OUT_DIR
set -euo pipefail
NAME=${1:?study name}; DB=${2:?mlflow sqlite file}; REPORT=${3:?report dir}; OUT=${4:?output dir}
PY=${PYTHON:-.venv/bin/python}; PORT=${PORT:-5077}
mkdir -p "$OUT"
shot() { chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget="${3:-3000}" \
           --window-size=1600,900 --screenshot="$2" "$1" >/dev/null 2>&1; }
"$(dirname "$PY")/mlflow" server --backend-store-uri "sqlite:///$DB" --host 127.0.0.1 --port "$PORT" --workers 1 \
  > /tmp/mlflow-ui.log 2>&1 &
SERVER=$!
trap 'pkill -P $SERVER 2>/dev/null; kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 60); do "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null && break; sleep 1; done
EXP=$("$PY" -c "import mlflow; print(mlflow.MlflowClient('sqlite:///$DB').get_experiment_by_name('$NAME').experiment_id)")
shot "http://127.0.0.1:$PORT/#/experiments/$EXP/runs?workflowType=machine_learning" "$OUT/mlflow_ui.png" 20000
for i in 1 2 5 7; do shot "file://$(realpath "$REPORT")/slides.html#$i" "$OUT/slide$i.png"; done
ls -la "$OUT"
