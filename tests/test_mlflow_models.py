"""Trials as MLflow users browse them: MLflow Models that load back, the Model Registry, dataset inputs,
the study's own run, and the number of tracking requests per trial."""

import json
import os

import pytest
import torch

from orchestrator.footprint.export import load_export
from orchestrator.study import load_space, run_study
from orchestrator.study.mlview import SHARED_VIEW_TAG, share_key
from conftest import one_line_error, run
from conftest import space_file

QUANT_DIMS = {"method": ["global_magnitude"], "ratio": [0.3, 0.6], "finetune_epochs": [0], "bits": [4],
              "act_bits": [8], "group_act_bits": {"stage1": [4, 6]}}


def trial_runs(client, name):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    return ([r for r in runs if r.data.tags.get("orchestrator.kind") == "study"],
            [r for r in runs if r.data.tags.get("orchestrator.kind") == "trial"])


def test_trials_load_back_as_mlflow_models_and_a_front_model_registers(base, cifar10_dir, in_tmp, capfd):
    import mlflow
    path = space_file(in_tmp, base, dimensions=QUANT_DIMS, budget={"trials": 2})
    storage, uri = f"sqlite:///{in_tmp}/optuna.db", f"sqlite:///{in_tmp}/mlflow.db"
    globals_before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"),
                      os.environ.get("MLFLOW_EXPERIMENT_ID"))
    st = run_study(load_space(path), storage=storage, data_dir=cifar10_dir, out_dir=in_tmp / "s", tracking_uri=uri)
    # logging the trials' models left a library caller's MLflow globals (and its children's environment) alone
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"),
            os.environ.get("MLFLOW_EXPERIMENT_ID")) == globals_before
    assert "Downloading artifacts" not in capfd.readouterr().err  # no MLflow progress bar amid the trial lines
    client = mlflow.MlflowClient(uri)
    (parent,), trials = trial_runs(client, "tiny")
    assert parent.info.status == "FINISHED" and len(trials) == 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")} >= {"pareto/pareto.png",
                                                                                      "pareto/pareto.md"}
    # the shared runs view the study's run links to: every column it selects exists on the trials
    exp = client.get_experiment_by_name("tiny")
    key = share_key("tiny")
    view = json.loads(exp.tags[SHARED_VIEW_TAG + key])
    logged = {f"metrics.`{m}`" for r in trials for m in r.data.metrics} | \
        {f"params.`{p}`" for r in trials for p in r.data.params} | {f"tags.`{t}`" for r in trials for t in r.data.tags}
    assert set(view["selectedColumns"]) <= logged and "params.`act_stage1`" in view["selectedColumns"]
    assert "params.`bits`" not in view["selectedColumns"]  # one choice only: not searched
    assert {c["yaxis"]["key"] for c in view["compareRunCharts"]} == {"test_acc", "val_acc"}
    assert f"viewStateShareKey={key}" in parent.data.tags["mlflow.note.content"]
    assert len(client.search_runs([exp.experiment_id], view["searchFilter"])) == 2  # the filter finds the trials
    assert st.user_attrs["mlflow_views"]["chart"].endswith("compareRunsMode=CHART")
    mlflow.set_tracking_uri(uri)
    x = torch.randn(5, 3, 32, 32)
    for r in trials:
        t = st.trials[int(r.data.tags["orchestrator.trial"])]
        exported, header = load_export(t.user_attrs["export"])
        assert any(hasattr(m, "act_quant") for m in exported.modules())  # the quantizers are in the graph
        loaded = mlflow.pytorch.load_model(f"runs:/{r.info.run_id}/model")
        with torch.no_grad():
            want, got = exported(x), loaded(x)
        assert torch.allclose(got, want, atol=1e-5) and torch.equal(got.argmax(1), want.argmax(1))
        info = mlflow.models.get_model_info(f"runs:/{r.info.run_id}/model")
        assert info.signature.inputs.inputs[0].shape == (-1, 3, 32, 32)
        inputs = {d.dataset.name: d for d in client.get_run(r.info.run_id).inputs.dataset_inputs}
        assert set(inputs) == {"cifar10-train", "cifar10-validation", "cifar10-test"}
        assert inputs["cifar10-validation"].tags[0].value == "validation" and '"num_rows": 20' in \
            inputs["cifar10-validation"].dataset.profile
        assert {"val_acc", "footprint_bytes"} <= set(r.data.metrics)
        assert ("test_acc" in r.data.metrics) == (r.data.tags["orchestrator.pareto"] == "true")  # the front's only
    # register: a named trial, then the default pick (untrained tiny models: none within 1 point may exist)
    number = next(r for r in trials if r.data.tags["orchestrator.pareto"] == "true").data.tags["orchestrator.trial"]
    r = run("study", "pareto", path, "--storage", storage, "--mlflow", uri, "--out", in_tmp / "p",
            "--register", "tiny-front", "--trial", number)
    assert r.exit_code == 0, r.output
    version = client.get_model_version("tiny-front", "1")
    assert version.run_id == next(r.info.run_id for r in trials if r.data.tags["orchestrator.trial"] == number)
    assert {"test_acc", "footprint_bytes"} <= set(version.tags)
    model = mlflow.pytorch.load_model("models:/tiny-front/1")
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), load_export(st.trials[int(number)].user_attrs["export"])[0](x).argmax(1))
    one_line_error(run("study", "pareto", path, "--storage", storage, "--mlflow", uri, "--register", "m",
                       "--trial", "99"), "--trial 99")
    one_line_error(run("study", "pareto", path, "--storage", storage, "--mlflow", uri, "--trial", "0"), "--register")


def test_per_trial_tracking_requests_are_bounded(base, cifar10_dir, in_tmp, monkeypatch):
    """Against a real MLflow server: requests other than artifact uploads and the model's own logging."""
    server = os.environ.get("ORCHESTRATOR_TEST_MLFLOW")
    if not server:
        pytest.skip("no MLflow server (source .ci/services.sh start to run this test)")
    import uuid

    from mlflow.utils import rest_utils
    calls = []
    real = rest_utils.http_request

    def counting(host_creds, endpoint, method, *args, **kwargs):
        calls.append(endpoint)
        return real(host_creds, endpoint, method, *args, **kwargs)

    monkeypatch.setattr(rest_utils, "http_request", counting)
    name = f"requests-{uuid.uuid4().hex[:8]}"
    path = space_file(in_tmp, base, name=name, dimensions=QUANT_DIMS, budget={"trials": 2})
    st = run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir, out_dir=in_tmp / "s",
                   tracking_uri=server)
    from orchestrator.study.pareto import rows
    front = sum(r["pareto"] for r in rows(st))
    # per trial: create, params batch, metrics batch, inputs, end; reads (artifact locations) and the
    # MLflow Model's own requests (logged-models, runs/outputs) are left out, as are the uploads
    writes = [c.rsplit("/", 1)[-1] for c in calls if "/runs/" in c and not c.endswith(("/get", "/outputs", "/search"))]
    per_endpoint = {e: writes.count(e) for e in set(writes)}
    study = {"create": 1, "log-batch": 1, "update": 2, "set-tag": 3,  # its run, RUNNING and FINISHED, its description,
             "log-metric": front}  # the front tags; at the end, the test accuracy of each front trial
    per_trial = {e: (n - study.get(e, 0)) / 2 for e, n in per_endpoint.items()}
    assert per_trial == {"create": 1, "log-batch": 2, "log-inputs": 1, "update": 1, "set-tag": 0, "log-metric": 0}, \
        per_endpoint
    assert sum(per_trial.values()) <= 5
