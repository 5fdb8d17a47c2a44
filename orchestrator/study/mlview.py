"""The MLflow UI view a study's experiment opens with: its trials, the useful columns, two charts.

MLflow's runs page keeps a shared view as an experiment tag `mlflow.sharedViewState.<key>` (what its
"Share" button writes) and opens it from `#/experiments/<id>/runs?viewStateShareKey=<key>`: the
search filter, the sort, the selected columns and the chart cards. The study writes one such view,
keyed by the study name, and puts its links in the study run's description, so a user who opens the
study's run lands on the trials side by side (validation and test accuracy, footprint, the searched
parameters) or on the accuracy-vs-footprint scatter charts.
"""

from __future__ import annotations

import json
from urllib.parse import quote

SHARED_VIEW_TAG = "mlflow.sharedViewState."
METRIC_COLUMNS = ("val_acc", "test_acc", "footprint_bytes", "compression", "param_bytes", "activation_peak_bytes")
TRIAL_FILTER = "tags.orchestrator.kind = 'trial'"


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the runs table's canonical column key


def _scatter(uuid: str, x: str, y: str, name: str) -> dict:
    return {"uuid": uuid, "type": "SCATTER", "runsCountToCompare": 500, "metricSectionId": "orchestrator",
            "deleted": False, "isGenerated": False, "displayName": name, "xaxis": {"key": x, "type": "METRIC"},
            "yaxis": {"key": y, "type": "METRIC"}}


def view_state(params: list[str]) -> dict:
    """The shared view: trials sorted by footprint, accuracy and footprint metrics and the searched
    parameters as columns, and scatter charts of test and validation accuracy against footprint."""
    columns = ([_column("metrics", m) for m in METRIC_COLUMNS] + [_column("params", p) for p in params]
               + [_column("tags", "orchestrator.pareto")])
    return {
        "searchFilter": TRIAL_FILTER,
        "orderByKey": _column("metrics", "footprint_bytes"), "orderByAsc": True,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        "selectedColumns": columns, "columnOrder": columns,
        "compareRunCharts": [_scatter("orchestrator-test", "footprint_bytes", "test_acc", "test accuracy vs footprint (B)"),
                             _scatter("orchestrator-val", "footprint_bytes", "val_acc", "validation accuracy vs footprint (B)")],
        "compareRunSections": [{"uuid": "orchestrator", "name": "Accuracy vs footprint", "display": True,
                                "isReordered": False, "deleted": False, "isExpanded": True}],
        "hideEmptyCharts": True, "runsHiddenMode": "SHOW_ALL",  # charts show every trial, not the first 10
    }


def share_key(study_name: str) -> str:
    return "orchestrator-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in study_name)


def view_links(experiment_id: str, key: str) -> dict[str, str]:
    """UI fragments (append to the server's address) of the view as a table and as charts."""
    base = f"#/experiments/{experiment_id}/runs?viewStateShareKey={quote(key)}&workflowType=machine_learning"
    return {"table": base + "&compareRunsMode=TABLE", "chart": base + "&compareRunsMode=CHART"}


def write_view(client, experiment_id: str, parent_run: str, study_name: str, params: list[str]) -> dict[str, str]:
    """Store the view on the experiment and link it from the study run's description; returns the links."""
    key = share_key(study_name)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(view_state(params)))
    links = view_links(experiment_id, key)
    note = (f"Optuna study `{study_name}`: its trials are the nested runs.\n\n"
            f"- [Trials side by side]({links['table']}) (accuracy, footprint, searched parameters; sorted by "
            f"footprint)\n- [Accuracy vs footprint charts]({links['chart']})\n"
            "- `pareto/` holds the Pareto front (PNG, interactive HTML, CSV, Markdown).")
    client.set_tag(parent_run, "mlflow.note.content", note)
    return links
