import json

import pytest
import torch

from conftest import one_line_error, run


def test_prune_unstructured_prints_per_layer_sparsity_and_saves_a_plain_checkpoint(base, cifar10_dir, tmp_path):
    out = tmp_path / "p.pt"
    r = run("prune", base, "--method", "global_magnitude", "--ratio", 0.7, "--data-dir", cifar10_dir, "--out", out)
    assert r.exit_code == 0, r.output
    assert "layer1.0.conv1" in r.output and "total" in r.output and "70.0%" in r.output
    ckpt = torch.load(out, weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.endswith(("_orig", "_mask"))]
    prune = ckpt["config"]["pipeline"]["steps"][0]["prune"]
    assert prune["method"] == "global_magnitude" and prune["ratio"] == 0.7
    assert (tmp_path / "p.orcx").is_file() and (tmp_path / "p.json").is_file()  # exported and recorded like any pipeline
    assert ckpt["metrics"]["sparsity"]["total"] == pytest.approx(0.7, abs=1e-3)
    r = run("eval", out, "--data-dir", cifar10_dir, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["n"] == 30


def test_prune_structured_with_finetune_gives_a_smaller_model_that_reloads(base, cifar10_dir, tmp_path):
    out = tmp_path / "s.pt"
    r = run("prune", base, "--method", "l1_filter", "--stage-ratios", "0.5,0.5,0.25", "--finetune-epochs", 1,
            "--finetune-batch-size", 32, "--data-dir", cifar10_dir, "--val-size", 20, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "widths:" in r.output and not (tmp_path / "s.pt.work").exists()
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["widths"]["blocks"] == [[4], [8], [24]]
    steps = ckpt["metrics"]["pipeline"]["steps"]
    assert steps[1]["params"] < steps[0]["params"] and ckpt["metrics"]["eval_split"] == "cifar10/val"
    r = run("footprint", out, "--no-layers")
    assert r.exit_code == 0, r.output


def test_prune_from_a_yaml_config(base, cifar10_dir, tmp_path):
    cfg = tmp_path / "thinet.yaml"
    cfg.write_text("method: thinet\nratio: 0.5\nimages: 8\nlocations: 2\n")
    r = run("prune", base, "--config", cfg, "--data-dir", cifar10_dir, "--val-size", 20, "--out", tmp_path / "t.pt")
    assert r.exit_code == 0, r.output
    assert torch.load(tmp_path / "t.pt", weights_only=True)["widths"]["blocks"] == [[4], [8], [16]]
    cfg.write_text("method: thinet\nratoi: 0.5\n")
    one_line_error(run("prune", base, "--config", cfg, "--data-dir", cifar10_dir), "unknown key 'ratoi'")


def test_prune_bad_input_is_one_line(base, cifar10_dir, tmp_path):
    one_line_error(run("prune", base, "--method", "magic"), "unknown pruning method 'magic'; allowed: ")
    one_line_error(run("prune", base, "--method", "global_magnitude", "--ratio", 1.0), "'ratio'.*less than 1")
    one_line_error(run("prune", base, "--method", "global_magnitude", "--ratio", -0.2), "'ratio'.*greater than")
    one_line_error(run("prune", base, "--method", "global_magnitude", "--rounds", 3), "'rounds'")
    one_line_error(run("prune", base, "--method", "l1_filter", "--stage-ratios", "a,b"), "--stage-ratios='a,b'")
    one_line_error(run("prune", base), "--method")
    one_line_error(run("prune", tmp_path / "none.pt", "--method", "random"), "none.pt")
    r = run("prune", "--list")
    assert r.exit_code == 0 and "thinet" in r.output and "han" in r.output


def test_sweep_writes_table_plot_and_resumes(base, cifar10_dir, tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", base, "--data-dir", cifar10_dir, "--ratios", "0,0.5,0.9", "--methods",
            "global_magnitude,random", "--out", out)
    r = run(*args)
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert len(rows) == 6 and (out / "sweep.png").stat().st_size > 1000
    assert "| 0.90 |" in (out / "sweep.md").read_text()
    assert [r["sparsity"] for r in rows if r["method"] == "random"] == pytest.approx([0, 0.5, 0.9], abs=1e-3)
    r = run(*args)  # everything is done already: nothing recomputed
    assert r.exit_code == 0 and "ratio 0.50: sparsity" not in r.output
    assert json.loads((out / "sweep.json").read_text())["rows"] == rows


def test_sensitivity_table_and_plot(base, cifar10_dir, tmp_path):
    out = tmp_path / "sens"
    r = run("sensitivity", base, "--data-dir", cifar10_dir, "--val-size", 20, "--ratios", "0.5,0.9", "--out", out)
    assert r.exit_code == 0, r.output
    table = json.loads((out / "sensitivity.json").read_text())["table"]
    assert set(table["groups"]) == {"layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"}
    assert (out / "sensitivity.png").is_file() and "layer3.0.conv1" in r.output


def test_prune_with_a_teacher_distills(base, cifar10_dir, tmp_path):
    out = tmp_path / "kd.pt"
    r = run("prune", base, "--method", "global_magnitude", "--ratio", 0.8, "--finetune-epochs", 1,
            "--finetune-batch-size", 32, "--teacher", base, "--data-dir", cifar10_dir, "--val-size", 20,
            "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["config"]["pipeline"]["steps"][0]["prune"]["finetune"]["kd"] == {"temperature": 4.0, "alpha": 0.9}
    assert ckpt["config"]["teacher"] == str(base)


def test_sweep_with_bn_recalibration_labels_its_rows(base, cifar10_dir, tmp_path):
    r = run("sweep", base, "--data-dir", cifar10_dir, "--ratios", "0.5", "--methods", "random",
            "--bn-recalibration", 40, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())["rows"]
    assert [(row["method"], row["ratio"]) for row in rows] == [("random+bn", 0.5)]
