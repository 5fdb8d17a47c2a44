"""Trials' models as MLflow Models, and front models in the Model Registry.

Each completed trial's exported model is logged with the PyTorch flavor in its `pt2` format
(`torch.export`: a traced graph, no pickled code), with a tensor signature whose batch dimension is
free, the `.orcx` file and its footprint beside it. `mlflow.pytorch.load_model("runs:/<id>/model")`
then returns a module whose predictions equal the `.orcx` model's. Inputs are normalized images,
like the checkpoint's model: the normalization is in the model's metadata.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import OrchestratorError

MODEL_NAME = "model"  # artifact path of the MLflow Model in a trial's run
EXAMPLE_BATCH = 2  # > 1, so torch.export keeps the batch dimension dynamic
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_GLOBALS = threading.Lock()  # MLflow's process globals, set and restored around one model logging at a time


def log_pytorch_model(model: torch.nn.Module, header: dict, export: Path, run_id: str, tracking_uri: str,
                      experiment_id: str):
    """Log `model` (an `.orcx` model, eval mode) into run `run_id`; returns MLflow's ModelInfo."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = torch.zeros(EXAMPLE_BATCH, 3, 32, 32)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, 32, 32), "images")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, header["num_classes"]),
                                                          "logits")]))
    metadata = {"arch": header["arch"], "dataset": header.get("dataset"),
                "normalization": header.get("normalization"), "input": "normalized images, NCHW float32",
                "orcx": Path(export).name}
    # no serving-input validation: it reloads the model per trial only to try a JSON list input, which
    # the pt2 flavor does not take (a warning per trial); the tests load every logged model instead
    with _global_store(tracking_uri, experiment_id):
        return mlflow.pytorch.log_model(model.eval(), name=MODEL_NAME, input_example=example.numpy(),
                                        signature=signature, serialization_format="pt2", metadata=metadata,
                                        extra_files=[str(export)], run_id=run_id, validate_serving_input=False,
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


@contextmanager
def _global_store(tracking_uri: str, experiment_id: str):
    """MLflow's model logging reads the store and experiment from process globals (which also set environment
    variables that child processes inherit): set for the call, then put back, so a library caller's own
    MLflow setup is what it was (one call at a time). Its artifact progress bars (one per trial, amid the
    study's lines) are off."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    with _GLOBALS:
        env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", PROGRESS_ENV)}
        uri, experiment = utils._tracking_uri, fluent._active_experiment_id
        try:
            os.environ[PROGRESS_ENV] = "false"
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_experiment(experiment_id=experiment_id)
            yield
        finally:
            mlflow.set_tracking_uri(uri)
            fluent._active_experiment_id = experiment
            for k, v in env.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def pick_front_model(rows: list[dict], trial: int | None = None, max_drop: float = 0.01) -> dict:
    """The row to register: trial `trial`, else the smallest front model within `max_drop` of the base (test)."""
    done = [r for r in rows if r.get("mlflow_run_id")]
    if trial is not None:
        found = [r for r in done if r["trial"] == trial]
        if not found:
            raise OrchestratorError(f"--trial {trial}: no finished trial with that number; finished: "
                                    f"{', '.join(str(r['trial']) for r in done) or 'none'}")
        return found[0]
    front = [r for r in done if r["pareto"] and r.get("base_test_acc") is not None and r["test_acc"] is not None
             and r["base_test_acc"] - r["test_acc"] <= max_drop]
    if not front:
        raise OrchestratorError(f"no front model is within {100 * max_drop:g} test points of the base; "
                                "name one with --trial N")
    return min(front, key=lambda r: r["footprint_bytes"])


def register(tracking_uri: str | None, name: str, row: dict) -> tuple[str, str]:
    """Register a trial's MLflow Model under `name` with its accuracy and footprint as tags;
    returns (model name, version)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return _register(MlflowClient(tracking_uri), name, row)
    except MlflowException as exc:
        store = tracking_uri or "the default MLflow store"
        raise OrchestratorError(f"cannot register trial {row['trial']} as {name!r} in {store}: "
                                f"{str(exc).splitlines()[0][:200]}") from None


def _register(client, name: str, row: dict) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    run_id = row["mlflow_run_id"]
    models = [m for m in client.search_logged_models(
        experiment_ids=[client.get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'")]
    if not models:
        raise OrchestratorError(f"trial {row['trial']} (run {run_id}) has no logged MLflow Model to register")
    tags = {"trial": str(row["trial"]), "val_acc": f"{row['val_acc']:.4f}",
            "footprint_bytes": f"{row['footprint_bytes']:.0f}", "configuration": row["label"][:500]}
    if row["test_acc"] is not None:  # measured for final front trials only
        tags["test_acc"] = f"{row['test_acc']:.4f}"
    if row["test_acc"] is not None and row.get("base_test_acc") is not None:
        tags["test_points_vs_base"] = f"{100 * (row['test_acc'] - row['base_test_acc']):+.2f}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Compressed CIFAR models registered by orchestrator")
    version = client.create_model_version(name, models[0].model_uri, run_id=run_id, tags=tags)
    return name, version.version
