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

PARENT_ATTR = "mlflow_parent_run_id"
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
                self.client = MlflowClient(self.uri)
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

    def parent(self, study, space_dump: dict) -> str:
        """The study's parent run (created once, its id kept in the Optuna study)."""
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id:
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study.study_name,
                                     tags={"orchestrator.study": study.study_name, "orchestrator.kind": "study"})
        self.client.log_dict(run.info.run_id, space_dump, "search_space.json")
        for k, v in _flat("", {k: space_dump[k] for k in ("dataset", "base", "val_size", "objectives")}, {}).items():
            self.client.log_param(run.info.run_id, k, v)
        study.set_user_attr(PARENT_ATTR, run.info.run_id)
        # Workers starting together may each create a parent; the last one written to the study wins
        # and the others delete theirs, so every trial nests under the same run.
        time.sleep(0.5)
        winner = study._storage.get_study_user_attrs(study._study_id).get(PARENT_ATTR)
        if winner != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return winner

    def start_trial(self, parent: str, study_name: str, number: int, params: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"{study_name}-trial-{number}",
                                     tags={"mlflow.parentRunId": parent, "orchestrator.study": study_name,
                                           "orchestrator.trial": str(number), "orchestrator.kind": "trial"})
        for k, v in params.items():
            self.client.log_param(run.info.run_id, k, v)
        return run.info.run_id

    def finish_trial(self, run_id: str, result: dict, checkpoint: Path, export: Path) -> None:
        f, last = result["final"], result["steps"][-1]
        metrics = {"val_acc": last["eval_acc"], "test_acc": f["test_acc"], "footprint_bytes": f["total_bits"] / 8,
                   "param_bytes": f["param_bits"] / 8, "activation_peak_bytes": f["activation_peak_bits"] / 8,
                   "macs": f["macs"], "macs_sparse": f["macs_sparse"], "nonzero": f["nonzero"],
                   "compression": f["compression"], "file_bytes": f["file_bytes"]}
        now = int(time.time() * 1000)
        for k, v in metrics.items():
            self.client.log_metric(run_id, k, float(v), timestamp=now)
        for i, s in enumerate(result["steps"]):
            self.client.log_metric(run_id, "step_eval_acc", s["eval_acc"], step=i)
            self.client.log_metric(run_id, "step_footprint_bytes", s["total_bits"] / 8, step=i)
        self.client.log_dict(run_id, result, "record.json")
        self.client.log_dict(run_id, result["pipeline"], "pipeline.json")
        self.client.log_artifact(run_id, str(export))
        self.client.log_artifact(run_id, str(checkpoint))
        self._log_footprint(run_id, export, f.get("act_bits"))
        self.client.set_terminated(run_id, "FINISHED")

    def _log_footprint(self, run_id: str, export: Path, act_bits: int | None) -> None:
        """The exported model's footprint: JSON with every tensor, and the per-layer table as text."""
        from ..footprint import format_report, measure
        from ..footprint.export import load_export

        fp = measure(load_export(export)[0], act_bits=act_bits)
        self.client.log_dict(run_id, fp.model_dump(), "footprint.json")
        self.client.log_text(run_id, format_report(fp), "footprint.txt")

    def fail_trial(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "orchestrator.fail_reason", reason[:5000])
        self.client.set_terminated(run_id, "FAILED")

    def tag_pareto(self, run_ids: set[str], all_ids: list[str]) -> None:
        for rid in all_ids:
            self.client.set_tag(rid, "orchestrator.pareto", "true" if rid in run_ids else "false")

    def log_parent_files(self, parent: str, paths: list[Path], folder: str = "pareto") -> None:
        for p in paths:
            self.client.log_artifact(parent, str(p), artifact_path=folder)
