"""MLflow logging of a study: one parent run per study, one nested run per trial.

Uses `MlflowClient` with explicit run ids (no fluent active-run state), so several worker
processes can log into the same experiment; nesting is the `mlflow.parentRunId` tag the UI reads.
Default store: `sqlite:///mlflow.db` in the working directory with artifacts under `./mlruns`
(MLflow's own default), or a tracking server URL.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from ..errors import OrchestratorError
from ..paths import sqlite_file

PARENT_ATTR = "mlflow_parent_run_id"
CREATED_ATTR = "created_at"  # time.time() when the study was created: how long a worker waits for its parent run
EXPORT_TAG = "orchestrator.export_sha256"  # a trial run's exported file: `deploy --mlflow` finds the run by it
SQLITE_ATTEMPTS = 5  # tries to open a local SQLite store that another worker may be creating


def _flat(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)[:500]
    else:
        out[prefix] = obj
    return out


def dataset_input(d: dict):
    """An MLflow dataset input: the data set, split, size and content hash a trial used."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=f"{d['name']}-{d['split']}", digest=d["digest"], source_type="local",
                      source=json.dumps({"uri": d["source"]}),
                      profile=json.dumps({"num_rows": d["size"], "split": d["split"]}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", d["split"])])


class _RaceSafe:
    """An MlflowClient whose tag writes survive a worker writing the same new tag at the same moment: the
    store inserts it twice and refuses the second insert (a unique-key violation, in PostgreSQL and SQLite
    alike); written again, it is an update. Everything else is the client's own."""
    RACED = ("duplicate key", "UniqueViolation", "UNIQUE constraint failed", "database is locked")
    ATTEMPTS = 4

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_tag(self, *args, **kwargs):
        return self._retried(self._client.set_tag, args, kwargs)

    def set_experiment_tag(self, *args, **kwargs):
        return self._retried(self._client.set_experiment_tag, args, kwargs)

    def _retried(self, write, args, kwargs):
        for attempt in range(self.ATTEMPTS):
            try:
                return write(*args, **kwargs)
            except Exception as exc:
                if attempt + 1 == self.ATTEMPTS or not any(s in str(exc) for s in self.RACED):
                    raise
                time.sleep(0.1 + random.random() * 0.3)


def file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_of_export(tracking_uri: str | None, export, run_id: str | None = None) -> tuple:
    """(client, run id) of the study trial whose run logged `export` (found by its hash), or of `run_id`;
    one-line errors for an unreachable store, an unknown run, or a file no run logged."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    local = uri.startswith("file://") or ("://" not in uri and ("/" in uri or uri.startswith(".")))  # a folder
    store = sqlite_file(uri.split("?")[0]) or (Path(uri.removeprefix("file://")) if local else None)
    if store is not None and not store.exists():  # opening a local store that is not there would create it
        raise OrchestratorError(f"no MLflow store at {uri!r}: {store} does not exist")
    try:
        client = MlflowClient(uri)
        if run_id:
            return client, client.get_run(run_id).info.run_id
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, f"tags.`{EXPORT_TAG}` = '{file_sha256(export)}'", max_results=5) if ids else []
    except Exception as exc:
        what = f"run {run_id!r}" if run_id else f"tracking URI {uri!r}"
        raise OrchestratorError(f"cannot use MLflow {what}: {str(exc).strip().splitlines()[0][:200]}") from None
    if not runs:
        raise OrchestratorError(f"no MLflow run at {uri!r} logged {export} (a study trial's export); name the run "
                                f"with --mlflow-run RUN_ID")
    if len(runs) > 1:  # a study run again into the same store, or two trials that exported the same file
        raise OrchestratorError(f"{len(runs)} MLflow runs at {uri!r} logged {export} "
                                f"({', '.join(r.info.run_id for r in runs)}); name one with --mlflow-run RUN_ID")
    return client, runs[0].info.run_id


def log_deployment(client, run_id: str, result: dict, runtime: str) -> None:
    """The runtime program and its checks into `run_id`: the file and the result under deploy/<runtime>/,
    the checks as metrics named deploy_<runtime>_<check>."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    checks = ("runtime_acc", "reference_acc", "argmax_agreement", "max_logit_diff", "planned_activation_bytes",
              "pte_bytes", "images")
    client.log_batch(run_id, metrics=[Metric(f"deploy_{runtime}_{k}", float(result[k]), now, 0) for k in checks
                                      if result[k] is not None])
    client.log_artifact(run_id, result["pte"], f"deploy/{runtime}")
    client.log_dict(run_id, result, f"deploy/{runtime}/result.json")


class Tracker:
    def __init__(self, tracking_uri: str | None, experiment: str):
        import mlflow
        from mlflow import MlflowClient

        self.uri = tracking_uri or mlflow.get_tracking_uri()
        # Workers on one machine that start together race in MLflow's schema migration of a new
        # SQLite store ("duplicate column name"); the loser retries once the winner has created it.
        attempts = SQLITE_ATTEMPTS if self.uri.startswith("sqlite:") else 1
        for attempt in range(attempts):
            try:
                self.client = _RaceSafe(MlflowClient(self.uri))
                self.experiment_id = self._experiment(experiment)
                # MLflow 3's UI opens GenAI pages for experiments of unknown kind; these are training runs
                self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
                return
            except Exception as exc:  # unreachable server, bad URI: one line, the URI named
                if attempt + 1 == attempts:
                    raise OrchestratorError(f"cannot use MLflow tracking URI {self.uri!r}: "
                                            f"{str(exc).splitlines()[0][:200]}") from None
                time.sleep(1 + random.random())

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception as exc:  # another worker created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise exc
            return found.experiment_id

    def parent(self, study, space_dump: dict, owner: bool = True, wait: float = 60.0) -> str:
        """The study's parent run, its id kept in the Optuna study. Its creator (`owner`: the process that
        created the study) makes it; the others wait for its id until `wait` seconds after the study was
        created (`CREATED_ATTR`), so workers starting together share one. Past that (the creator died first), a
        worker makes it; of several made at once, the last written wins and the others are deleted."""
        def attrs() -> dict:
            return study._storage.get_study_user_attrs(study._study_id)

        until = 0.0 if owner else attrs().get(CREATED_ATTR, time.time()) + wait
        while not (run_id := attrs().get(PARENT_ATTR)) and time.time() < until:
            time.sleep(0.2)
        if run_id:
            return run_id
        run_id = self.client.create_run(self.experiment_id, run_name=study.study_name, tags={
            "orchestrator.study": study.study_name, "orchestrator.kind": "study"}).info.run_id
        study.set_user_attr(PARENT_ATTR, run_id)
        self.client.log_dict(run_id, space_dump, "search_space.json")
        from mlflow.entities import Param

        study_params = _flat("", {k: space_dump[k] for k in ("dataset", "base", "val_size", "objectives")}, {})
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in study_params.items()])
        if owner:
            return run_id
        time.sleep(0.5)
        winner = attrs().get(PARENT_ATTR)
        if winner != run_id:
            self.client.delete_run(run_id)
        return winner

    def start_trial(self, parent: str, study_name: str, number: int, params: dict) -> str:
        """The trial's run with its parameters: two requests."""
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=f"{study_name}-trial-{number}",
                                     tags={"mlflow.parentRunId": parent, "orchestrator.study": study_name,
                                           "orchestrator.trial": str(number), "orchestrator.kind": "trial"})
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def finish_trial(self, run_id: str, result: dict, checkpoint: Path, export: Path,
                     datasets: list[dict] = ()) -> None:
        """The model as an MLflow Model, metrics in one batch (linked to that model), the data sets as run
        inputs, the files in one upload. Requests besides the model's and the uploads: log_batch,
        log_inputs, set_terminated (with start_trial's two: five per trial)."""
        import shutil
        import tempfile

        from mlflow.entities import Metric, RunTag

        from ..footprint import format_report
        from ..footprint.export import load_export
        from .mlmodel import log_pytorch_model

        f, last = result["final"], result["steps"][-1]
        model, header = load_export(export)
        model_id = log_pytorch_model(model, header, export, run_id, self.uri, self.experiment_id).model_id
        metrics = {"val_acc": last["eval_acc"], "test_acc": f["test_acc"], "footprint_bytes": f["total_bits"] / 8,
                   "param_bytes": f["param_bits"] / 8, "activation_peak_bytes": f["activation_peak_bits"] / 8,
                   "macs": f["macs"], "macs_sparse": f["macs_sparse"], "nonzero": f["nonzero"],
                   "compression": f["compression"], "file_bytes": f["file_bytes"]}
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0, model_id=model_id) for k, v in metrics.items()
                 if v is not None]  # a study's trial has no test accuracy until it is on the final front
        for i, s in enumerate(result["steps"]):
            batch += [Metric("step_footprint_bytes", s["total_bits"] / 8, now, i)]
            if s.get("eval_acc") is not None:  # a study evaluates only the base and the last step
                batch += [Metric("step_eval_acc", float(s["eval_acc"]), now, i)]
        self.client.log_batch(run_id, metrics=batch, tags=[RunTag(EXPORT_TAG, file_sha256(export))])
        if datasets:
            self.log_inputs(run_id, [dataset_input(d) for d in datasets])
        fp = result["footprint"]  # the pipeline's own measurement of the exported model, whose totals are `f`'s
        record = {k: v for k, v in result.items() if k != "footprint"}
        with tempfile.TemporaryDirectory() as tmp:
            files = {"record.json": json.dumps(record, indent=1), "pipeline.json": json.dumps(result["pipeline"]),
                     "footprint.json": fp.model_dump_json(), "footprint.txt": format_report(fp)}
            for name, text in files.items():
                Path(tmp, name).write_text(text)
            for path in (export, checkpoint):
                shutil.copy(path, tmp)
            self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FINISHED")

    def fail_trial(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "orchestrator.fail_reason", reason[:5000])
        self.client.set_terminated(run_id, "FAILED")

    def log_inputs(self, run_id: str, inputs: list) -> None:
        """`log_inputs`, once more when a local worker inserted the same dataset row at the same moment (SQLite
        store: UNIQUE constraint on experiment, name and digest; the row exists on the second try)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException as exc:
            if "UNIQUE constraint failed: datasets" not in str(exc):
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    def close_lost(self, study) -> int:
        """Mark FAILED the still-RUNNING runs of trials Optuna failed for a lost worker (no heartbeat)."""
        closed = 0
        for t in study.get_trials(deepcopy=False):
            rid = t.user_attrs.get("mlflow_run_id")
            if t.state.name != "FAIL" or not rid or "fail_reason" in t.user_attrs:
                continue
            if self.client.get_run(rid).info.status == "RUNNING":
                self.client.set_tag(rid, "orchestrator.fail_reason", "worker lost (no heartbeat); the trial is retried")
                self.client.set_terminated(rid, "FAILED")
                closed += 1
        return closed

    def tag_pareto(self, run_ids: set[str], all_ids: list[str]) -> None:
        """Tag each trial's run `orchestrator.pareto` true/false, writing only the tags that change."""
        current = {}
        for i in range(0, len(all_ids), 100):  # one read per 100 runs
            chunk = all_ids[i:i + 100]
            ids = ", ".join(f"'{r}'" for r in chunk)
            for run in self.client.search_runs([self.experiment_id], f"attributes.run_id IN ({ids})",
                                               max_results=len(chunk)):
                current[run.info.run_id] = run.data.tags.get("orchestrator.pareto")
        for rid in all_ids:
            value = "true" if rid in run_ids else "false"
            if current.get(rid) != value:
                self.client.set_tag(rid, "orchestrator.pareto", value)

    def log_parent_files(self, parent: str, paths: list[Path], folder: str = "pareto") -> None:
        for p in paths:
            self.client.log_artifact(parent, str(p), artifact_path=folder)
