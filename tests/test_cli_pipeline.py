import json

import torch

from conftest import one_line_error, run


def test_pipeline_cli_runs_a_yaml_and_prints_each_step(base, cifar10_dir, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("val_size: 20\nsteps:\n  - prune: {method: l1_filter, ratio: 0.5}\n"
                 "  - quantize: {bits: 4}\n")
    out = tmp_path / "r.pt"
    r = run("pipeline", p, "--base", base, "--data-dir", cifar10_dir, "--val-size", 20, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[1].startswith("base") and lines[2].startswith("prune") and lines[3].startswith("quantize")
    assert "x; parameters" in r.output and (tmp_path / "r.orcx").is_file()
    record = json.loads((tmp_path / "r.json").read_text())
    from orchestrator.footprint.export import load_export
    from orchestrator.train import evaluate
    from orchestrator.data import load_split
    model, header = load_export(tmp_path / "r.orcx")  # the recorded accuracy is the exported model's
    assert record["final"]["test_acc"] == evaluate(model, load_split("cifar10", "test", cifar10_dir),
                                                   header["normalization"])["acc"]
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["quantization"]["layer1.0.conv1"]["bits"] == 4


def test_a_quantize_config_file_wins_over_the_defaults_and_yields_to_the_options_given(base, cifar10_dir, tmp_path):
    cfg = tmp_path / "q.yaml"

    def quantization(*options, yaml):
        cfg.write_text(yaml)
        out = tmp_path / f"q{len(list(tmp_path.glob('*.pt')))}.pt"
        r = run("quantize", base, "--config", cfg, *options, "--data-dir", cifar10_dir, "--val-size", 20,
                "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
        return torch.load(out, weights_only=True)["quantization"]

    q = quantization(yaml="bits: 3\nends_bits: null\n")
    assert q["conv1"]["bits"] == q["layer1.0.conv1"]["bits"] == 3  # not the options' defaults (8, ends 8)
    assert quantization(yaml="format: binary\n")["layer1.0.conv1"] == {"format": "binary", "bits": 1}
    assert quantization("--bits", 4, yaml="format: binary\n")["layer1.0.conv1"] == {"format": "int", "bits": 4}


def test_quantize_and_distill_commands(base, cifar10_dir, tmp_path):
    r = run("quantize", base, "--bits", 2, "--act-bits", 8, "--layer-bits", "linear=4", "--data-dir", cifar10_dir,
            "--val-size", 20, "--out", tmp_path / "q.pt", "--quiet")
    assert r.exit_code == 0, r.output
    q = torch.load(tmp_path / "q.pt", weights_only=True)["quantization"]
    assert q["layer2.0.conv2"] == {"format": "int", "bits": 2, "act_bits": 8} and q["linear"]["bits"] == 4
    assert q["conv1"]["bits"] == 8  # ends keep 8 bits
    r = run("distill", base, "--teacher", base, "--batch-size", 16, "--data-dir", cifar10_dir, "--val-size", 20,
            "--out", tmp_path / "d.pt", "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "d.json").read_text())
    assert rec["pipeline"]["steps"][0]["finetune"]["kd"] == {"temperature": 4.0, "alpha": 0.9}


def test_bad_quantize_and_pipeline_input_is_one_line(base, cifar10_dir, tmp_path):
    for bad in ("0", "33", "eight"):
        one_line_error(run("quantize", base, "--bits", bad, "--data-dir", cifar10_dir), "bits")
    one_line_error(run("quantize", base, "--layer-bits", "linear:4"), "--layer-bits entry 'linear:4'")
    p = tmp_path / "bad.yaml"
    p.write_text("steps:\n  - distil: {}\n")
    one_line_error(run("pipeline", p, "--base", base), "unknown step 'distil'")
    p.write_text("stepz: []\n")
    one_line_error(run("pipeline", p, "--base", base), "stepz")
    one_line_error(run("pipeline", tmp_path / "none.yaml"), "cannot read pipeline")
