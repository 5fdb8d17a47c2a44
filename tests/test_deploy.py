"""A compressed model in ExecuTorch: the runtime's logits, memory plan and program file, and the bad inputs."""

import json

import pytest
import torch
from torch import nn

from conftest import one_line_error, run

pytest.importorskip("executorch", reason="the [deploy] extra (ExecuTorch) is not installed")


@pytest.fixture
def quantized_export(base, cifar10_dir, tmp_path):
    """The tiny base at 4-bit weights, 8-bit activations, then written as an .orcx."""
    r = run("quantize", base, "--bits", 4, "--act-bits", 8, "--data-dir", cifar10_dir, "--val-size", 20,
            "--out", tmp_path / "q.pt", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("export", tmp_path / "q.pt", tmp_path / "q.orcx")
    assert r.exit_code == 0, r.output
    return tmp_path / "q.orcx"


def test_a_quantized_export_runs_in_executorch_like_its_reload(quantized_export, cifar10_dir, tmp_path):
    r = run("deploy", quantized_export, "--data-dir", cifar10_dir, "--images", 20, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    pte = tmp_path / "q.pte"
    assert d["pte"] == str(pte) and pte.stat().st_size == d["pte_bytes"] > 0
    # XNNPACK sums in another order: a value on a rounding edge of an 8-bit map may move one level
    assert d["images"] == 20 and d["argmax_agreement"] == 1.0 and d["max_logit_diff"] < 0.1
    assert d["runtime_acc"] == d["reference_acc"]
    # the fake quantization's round/clamp/where run as separate portable ops, each with its own fp32 temporary:
    # the plan holds more than the liveness peak of the maps alone (docs/footprint.md)
    assert d["planned_activation_bytes"] > d["liveness_peak_bytes_fp32"]
    assert d["liveness_peak_bytes_own"] < d["liveness_peak_bytes_fp32"]  # 8-bit maps where quantized
    assert "aten.round.default" in d["portable_ops"]  # the activation fake-quantization stays outside XNNPACK
    assert d["pte_bytes"] > d["source_bytes"]  # fp32 weights in the program, packed 4-bit ones in the .orcx


def test_a_float_checkpoint_runs_in_executorch_to_float_precision(base, cifar10_dir, tmp_path):
    r = run("deploy", base, "--out", tmp_path / "f.pte", "--data-dir", cifar10_dir, "--images", 20, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["argmax_agreement"] == 1.0 and d["max_logit_diff"] < 1e-4 and (tmp_path / "f.pte").is_file()
    assert d["liveness_peak_bytes_own"] == d["liveness_peak_bytes_fp32"]
    # the runtime holds the same fp32 maps: its plan is the liveness peak, give or take alignment
    assert abs(d["planned_activation_bytes"] / d["liveness_peak_bytes_fp32"] - 1) < 0.02


def test_deploy_bad_inputs_are_one_line(quantized_export, cifar10_dir, monkeypatch):
    one_line_error(run("deploy", quantized_export, "--to", "tflite"), r"--to 'tflite' .*allowed: executorch")
    import builtins

    real = builtins.__import__

    def no_executorch(name, *a, **k):
        if name.startswith("executorch"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    one_line_error(run("deploy", quantized_export), r"needs ExecuTorch: pip install -e '\.\[deploy\]'")


class _Branchy(nn.Module):  # data-dependent Python control flow: torch.export cannot trace it
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_a_layer_the_runtime_cannot_lower_is_named():
    from orchestrator.deploy import lower
    from orchestrator.errors import OrchestratorError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), _Branchy(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(OrchestratorError, match=r"cannot lower layer 2 \(_Branchy\) to executorch"):
        lower(model)


def test_deploy_logs_the_program_and_its_checks_to_the_run_that_exported_the_file(quantized_export, cifar10_dir,
                                                                                  tmp_path):
    import mlflow

    from orchestrator.study.tracking import EXPORT_TAG, file_sha256

    uri = f"sqlite:///{tmp_path}/m.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    other = client.create_run(exp, tags={EXPORT_TAG: "0" * 64}).info.run_id
    trial = client.create_run(exp, tags={EXPORT_TAG: file_sha256(quantized_export)}).info.run_id  # as a study tags it
    r = run("deploy", quantized_export, "--data-dir", cifar10_dir, "--images", 10, "--mlflow", uri, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["mlflow_run_id"] == trial
    assert [a.path for a in client.list_artifacts(trial, "deploy/executorch")] == [
        "deploy/executorch/q.pte", "deploy/executorch/result.json"]
    metrics = client.get_run(trial).data.metrics
    assert metrics["deploy_executorch_runtime_acc"] == d["runtime_acc"]
    assert metrics["deploy_executorch_pte_bytes"] == d["pte_bytes"] == (tmp_path / "q.pte").stat().st_size
    assert not client.list_artifacts(other)
    # a named run; bad runs and files no run logged fail before the program is built
    r = run("deploy", quantized_export, "--data-dir", cifar10_dir, "--images", 5, "--mlflow", uri,
            "--mlflow-run", other, "--out", tmp_path / "o.pte")
    assert r.exit_code == 0 and f"logged to MLflow run {other}" in r.output
    one_line_error(run("deploy", quantized_export, "--mlflow", uri, "--mlflow-run", "nope", "--out", tmp_path / "x.pte"),
                   "cannot use MLflow run 'nope'")
    twin = client.create_run(exp, tags={EXPORT_TAG: file_sha256(quantized_export)}).info.run_id
    one_line_error(run("deploy", quantized_export, "--mlflow", uri, "--out", tmp_path / "x.pte"),
                   rf"2 MLflow runs at .* logged .*q\.orcx \(.*{twin}.*\); name one with --mlflow-run")
    for r_id in (trial, twin):
        client.set_tag(r_id, EXPORT_TAG, "1" * 64)
    one_line_error(run("deploy", quantized_export, "--mlflow", uri, "--out", tmp_path / "x.pte"),
                   r"no MLflow run at .* logged .*q\.orcx")
    one_line_error(run("deploy", quantized_export, "--mlflow", f"sqlite:///{tmp_path}/typo.db", "--out",
                       tmp_path / "x.pte"), "no MLflow store at .*typo.db does not exist")
    assert not (tmp_path / "typo.db").exists()
    one_line_error(run("deploy", quantized_export, "--calibration-images", 8), "give --int8 too")
    one_line_error(run("deploy", quantized_export, "--mlflow", str(tmp_path / "mlrunz")), "mlrunz does not exist")
    assert not (tmp_path / "mlrunz").exists()
    one_line_error(run("deploy", quantized_export, "--out", tmp_path / "q.pte" / "x.pte"), "--out")
    one_line_error(run("deploy", quantized_export, "--mlflow-run", trial), "give --mlflow URI too")
    assert not (tmp_path / "x.pte").exists()


def test_int8_runs_the_integer_layers_in_int8_kernels_and_keeps_a_float_format_layer_float(base, quantized_export,
                                                                                             cifar10_dir, tmp_path):
    from orchestrator.checkpoint import load_model
    from orchestrator.data import load_split
    from orchestrator.deploy import _int8_graph, int8_layers
    from orchestrator.qformat import quantize_weight_

    model, ckpt = load_model(base)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for n in layers:
        quantize_weight_(model.get_submodule(n), 16 if n == layers[2] else 4)
    assert int8_layers(model) == [n for n in layers if n != layers[2]]
    graph = _int8_graph(model, int8_layers(model), load_split("cifar10", "train", cifar10_dir).head(16),
                        ckpt.normalization)
    per_channel = [n for n in graph.graph.nodes if "dequantize_per_channel" in str(n.target)]
    assert len(per_channel) == len(layers) - 1  # one int8 weight per integer layer, none for the fp16 one
    r = run("deploy", quantized_export, "--out", tmp_path / "f.pte", "--data-dir", cifar10_dir, "--images", 10, "--json")
    fp32 = json.loads(r.output[r.output.index("{"):])
    r = run("deploy", quantized_export, "--int8", "--calibration-images", 32, "--out", tmp_path / "i.pte",
            "--data-dir", cifar10_dir, "--images", 10, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    params = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    assert d["float_layers"] == [] and len(d["int8_layers"]) == len(layers) and d["runtime_activation_bits"] == 8
    assert fp32["pte_bytes"] - d["pte_bytes"] > 2.5 * params  # 1 byte per weight in the program, not 4
    assert d["planned_activation_bytes"] is None and d["liveness_peak_bytes_int8"] == fp32["liveness_peak_bytes_fp32"] / 4
    one_line_error(run("deploy", base, "--int8", "--data-dir", cifar10_dir, "--out", tmp_path / "x.pte"),
                   "--int8: no layer has integer weights of 8 bits or fewer")
