import json

import torch

from conftest import one_line_error, run




def test_models_lists_the_zoo():
    r = run("models")
    assert r.exit_code == 0
    assert "resnet20" in r.output and "269,722" in r.output and "853,018" in r.output and "mobilenetv2" in r.output


def test_data_check(cifar10_dir, cifar100_dir):
    r = run("data", "check", "--data-dir", cifar10_dir)
    assert r.exit_code == 0 and "cifar10/train: 100 images" in r.output and "note:" in r.output
    r = run("data", "check", "--dataset", "cifar100", "--data-dir", cifar100_dir)
    assert r.exit_code == 0 and "100 classes" in r.output


def test_data_check_missing_folder(tmp_path):
    one_line_error(run("data", "check", "--data-dir", tmp_path / "none", "--no-download"),
                   "cifar10 not found: looked for .*none/cifar-10-batches-py")


def test_train_then_eval(cifar10_dir, tmp_path):
    out = tmp_path / "m.pt"
    r = run("train", "--arch", "resnet8", "--width-mult", 0.25, "--data-dir", cifar10_dir, "--epochs", 1,
            "--batch-size", 32, "--val-size", 20, "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and out.is_file() and not (tmp_path / "m.pt.state").exists()
    r = run("eval", out, "--data-dir", cifar10_dir, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["n"] == 30 and result["arch"] == "resnet8"
    from orchestrator.workflows import evaluate_checkpoint
    assert result["acc"] == evaluate_checkpoint(out, data_dir=cifar10_dir)["acc"]  # the CLI prints the library's number
    assert result["acc"] * 30 == round(result["acc"] * 30)  # a count of correct test images
    r = run("eval", out, "--data-dir", cifar10_dir, "--split", "val", "--val-size", 20)
    assert r.exit_code == 0 and "cifar10/val (20 images)" in r.output
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["config"]["train"]["epochs"] == 1 and "environment" in ckpt["config"]


def test_fine_tune_from_checkpoint_keeps_its_normalization(cifar10_dir, tmp_path):
    first = tmp_path / "a.pt"
    assert run("train", "--arch", "resnet8", "--width-mult", 0.25, "--data-dir", cifar10_dir, "--epochs", 0, "--batch-size", 32,
               "--out", first, "--quiet").exit_code == 0
    second = tmp_path / "b.pt"
    r = run("train", "--init", first, "--data-dir", cifar10_dir, "--epochs", 1, "--batch-size", 50,
            "--out", second, "--quiet")
    assert r.exit_code == 0, r.output
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a["normalization"] == b["normalization"] and b["arch"] == "resnet8"


def test_bad_values_are_one_line_errors(cifar10_dir, tmp_path):
    one_line_error(run("train", "--epochs", -1), "Invalid value for '--epochs'")
    one_line_error(run("train", "--arch", "resnet21", "--data-dir", cifar10_dir, "--epochs", 0),
                   "unknown arch 'resnet21'")
    one_line_error(run("train", "--schedule", "step"), "'step' is not one of")
    one_line_error(run("train", "--data-dir", cifar10_dir, "--batch-size", 500, "--epochs", 1),
                   "batch_size=500 exceeds")
    one_line_error(run("train", "--data-dir", cifar10_dir, "--val-size", 100, "--epochs", 1),
                   "val_size=100 must be in")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    one_line_error(run("eval", bad, "--data-dir", cifar10_dir), "bad.pt is not a checkpoint")


def test_footprint_export_import(tmp_path):
    from orchestrator.checkpoint import from_model, save_checkpoint
    from orchestrator.models import build_model

    ckpt = tmp_path / "r8.pt"
    save_checkpoint(ckpt, from_model(build_model("resnet8"), "cifar10", {"mean": [0.5] * 3, "std": [0.25] * 3}))
    r = run("footprint", ckpt, "--json")
    assert r.exit_code == 0, r.output
    fp = json.loads(r.output)
    assert fp["param_bits"] == 32 * fp["params"] and fp["activation_peak_bits"] == 3 * 16 * 1024 * 32
    r = run("footprint", ckpt, "--act-bits", 8)
    assert r.exit_code == 0 and "layer1.0.conv1.weight" in r.output and "8-bit" in r.output
    r = run("export", ckpt, tmp_path / "r8.orcx")
    assert r.exit_code == 0 and "payload/accounted 1.0000" in r.output
    r = run("footprint", tmp_path / "r8.orcx", "--json")
    assert json.loads(r.output)["param_bits"] == fp["param_bits"]
    r = run("import", tmp_path / "r8.orcx", tmp_path / "back.pt")
    assert r.exit_code == 0 and (tmp_path / "back.pt").is_file()
    one_line_error(run("footprint", ckpt, "--batch", 0), "batch=0 must be an integer >= 1")
    one_line_error(run("footprint", ckpt, "--act-bits", 64), r"act_bits=64 is not allowed; allowed: 32 \(float\) or 2..16")
    one_line_error(run("footprint", tmp_path / "missing.pt"), "missing.pt does not exist")
