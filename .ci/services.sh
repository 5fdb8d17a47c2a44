#!/usr/bin/env bash
# Start (or stop) the servers of the several-machine topology on loopback, for the tests:
# one PostgreSQL server holding the shared Optuna storage and, in a database of its own, the runs of
# an MLflow tracking server, as docker/compose.yaml deploys them (the two cannot share a database: both
# keep their schema version in alembic's `alembic_version` table).
#   source .ci/services.sh start   -> exports ORCHESTRATOR_TEST_POSTGRES and ORCHESTRATOR_TEST_MLFLOW
#   .ci/services.sh stop
# Installs PostgreSQL from Debian when it is missing. Any failure leaves the variables unset, and the
# tests that need them skip with a message; the rest of the suite runs.
SVC_DIR=${SVC_DIR:-/tmp/orchestrator-ci}
PG_PORT=${PG_PORT:-55432}
MLFLOW_PORT=${MLFLOW_PORT:-55500}
VENV_BIN=${VENV_BIN:-$(pwd)/.venv/bin}

_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }

_start() {
  mkdir -p "$SVC_DIR"
  if [ -z "$(_pg_bin)" ]; then
    echo "services: installing postgresql (Debian)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || { echo "services: could not install postgresql"; return 0; }
  fi
  local bin; bin=$(_pg_bin)
  local run_as=""
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd -r -m postgres
    chown postgres "$SVC_DIR"
    run_as="runuser -u postgres --"
  fi
  if [ ! -f "$SVC_DIR/pg/PG_VERSION" ]; then
    $run_as "$bin/initdb" -D "$SVC_DIR/pg" -A trust -U postgres >/dev/null || { echo "services: initdb failed"; return 0; }
  fi
  $run_as "$bin/pg_ctl" -D "$SVC_DIR/pg" -l "$SVC_DIR/pg.log" -w \
    -o "-p $PG_PORT -k $SVC_DIR -c listen_addresses=127.0.0.1" start >/dev/null \
    || { echo "services: postgres did not start (see $SVC_DIR/pg.log)"; return 0; }
  for db in optuna_ci mlflow_ci; do
    "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE $db" 2>/dev/null || true
  done
  export ORCHESTRATOR_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$PG_PORT/optuna_ci"
  "$VENV_BIN/mlflow" server --backend-store-uri "postgresql://postgres@127.0.0.1:$PG_PORT/mlflow_ci" \
    --artifacts-destination "$SVC_DIR/mlflow-artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    > "$SVC_DIR/mlflow.log" 2>&1 &
  echo $! > "$SVC_DIR/mlflow.pid"
  for _ in $(seq 1 60); do
    if "$VENV_BIN/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MLFLOW_PORT/health')" 2>/dev/null; then
      export ORCHESTRATOR_TEST_MLFLOW="http://127.0.0.1:$MLFLOW_PORT"
      break
    fi
    sleep 1
  done
  echo "services: postgres ${ORCHESTRATOR_TEST_POSTGRES:-unavailable}, mlflow ${ORCHESTRATOR_TEST_MLFLOW:-unavailable}"
}

_stop() {
  local bin; bin=$(_pg_bin)
  [ -f "$SVC_DIR/mlflow.pid" ] && { pkill -P "$(cat "$SVC_DIR/mlflow.pid")" 2>/dev/null; kill "$(cat "$SVC_DIR/mlflow.pid")" 2>/dev/null; rm -f "$SVC_DIR/mlflow.pid"; }
  if [ -n "$bin" ] && [ -f "$SVC_DIR/pg/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$SVC_DIR/pg" -m fast stop >/dev/null
    else "$bin/pg_ctl" -D "$SVC_DIR/pg" -m fast stop >/dev/null; fi
  fi
  return 0
}

case "${1:-start}" in
  start) _start ;;
  stop) _stop ;;
esac
