"""Bad inputs an operator or a new user gives: each ends in one `Error:` line naming the value or the
file, before any work is spent, within seconds, and never as a traceback or a silent accept."""

import json
import time

import pytest
import torch
import yaml

from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from conftest import one_line_error, run


@pytest.fixture
def bad_files(base, tmp_path):
    """Damaged copies of a good checkpoint and export, and a path that is a file where a folder is needed."""
    ckpt = load_checkpoint(base)
    out = {}
    nan = load_checkpoint(base)
    nan.state_dict["conv1.weight"][0, 0, 0, 0] = float("nan")
    out["nan"] = save_checkpoint(tmp_path / "nan.pt", nan)
    wrong = load_checkpoint(base)
    wrong.state_dict["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    out["shape"] = save_checkpoint(tmp_path / "shape.pt", wrong)
    typed = ckpt.to_dict()
    typed["num_classes"] = "ten"
    torch.save(typed, tmp_path / "classes.pt")
    out["classes"] = tmp_path / "classes.pt"
    export = tmp_path / "m.orcx"
    assert run("export", base, export).exit_code == 0
    import struct
    import zlib
    data = export.read_bytes()
    header = zlib.compress(b"[1, 2, 3]")
    (tmp_path / "list.orcx").write_bytes(data[:5] + struct.pack("<I", len(header)) + header)
    out["list_header"] = tmp_path / "list.orcx"
    head_len = struct.unpack("<I", data[5:9])[0]
    for name, count, extra in (("count", 4, b""), ("entries", 5, b""), ("tail", None, b"\0\0")):
        forged = json.loads(zlib.decompress(data[9:9 + head_len]))
        if count is not None:  # [fmt, bits, encoding (0: dense), index bits, nonzero, entries (relative index only)]
            next(t for t in forged["tensors"] if t[2] == 0)[count] += 1
        head = zlib.compress(json.dumps(forged).encode())
        (tmp_path / f"{name}.orcx").write_bytes(data[:5] + struct.pack("<I", len(head)) + head + data[9 + head_len:]
                                                + extra)
        out[f"{name}_header"] = tmp_path / f"{name}.orcx"
    (tmp_path / "a_file").write_text("")
    out["file"] = tmp_path / "a_file"
    out["export"] = export
    return out


CASES = {  # name: (arguments, with {base}, {data}, {file}, ... filled in; the pattern the error line must match)
    "width-mult nan": (["train", "--arch", "resnet8", "--width-mult", "nan", "--epochs", "0", "--data-dir", "{data}",
                        "--out", "{tmp}/w.pt"], r"width_mult=nan must be a finite number"),
    "train --out in /proc": (["train", "--arch", "resnet8", "--epochs", "1", "--data-dir", "{data}", "--out",
                              "/proc/none/x.pt"], r"--out /proc/none/x.pt: cannot write there"),
    "train --out under a file": (["train", "--arch", "resnet8", "--epochs", "1", "--data-dir", "{data}", "--out",
                                  "{file}/x.pt"], r"a_file is a file, not a folder"),
    "prune --out unwritable": (["prune", "{base}", "--method", "global_magnitude", "--ratio", "0.5", "--data-dir",
                                "{data}", "--out", "/proc/none/p.pt"], r"--out /proc/none/p.pt"),
    "quantize --out unwritable": (["quantize", "{base}", "--bits", "4", "--data-dir", "{data}", "--out",
                                   "/proc/none/q.pt"], r"--out /proc/none/q.pt"),
    "distill --out unwritable": (["distill", "{base}", "--teacher", "{base}", "--data-dir", "{data}", "--out",
                                  "/proc/none/d.pt"], r"--out /proc/none/d.pt"),
    "export to /proc": (["export", "{base}", "/proc/none/m.orcx"], r"export file /proc/none/m.orcx"),
    "import to /proc": (["import", "{export}", "/proc/none/m.pt"], r"/proc/none/m.pt"),
    "sweep --out unwritable": (["sweep", "{base}", "--data-dir", "{data}", "--out", "/proc/none/sw"],
                               r"--out /proc/none/sw"),
    "sweep --methods empty": (["sweep", "{base}", "--methods", "", "--data-dir", "{data}", "--out", "{tmp}/sw"],
                              r"no method to sweep; allowed: .*global_magnitude"),
    "sweep --ratios empty": (["sweep", "{base}", "--ratios", ",", "--data-dir", "{data}", "--out", "{tmp}/sw"],
                             r"ratio"),
    "sensitivity --out unwritable": (["sensitivity", "{base}", "--data-dir", "{data}", "--out", "/proc/none/s"],
                                     r"--out /proc/none/s"),
    "stage ratios beyond the stages": (["prune", "{base}", "--method", "l1_filter", "--stage-ratios",
                                        "0.1,0.2,0.3,0.4", "--data-dir", "{data}", "--out", "{tmp}/p.pt"],
                                       r"stage_ratios has 4 entries; resnet8 has 3 stages"),
    "checkpoint with NaN weights": (["eval", "{nan}", "--data-dir", "{data}"],
                                    r"nan.pt: tensor 'conv1.weight' holds NaN"),
    "checkpoint whose tensors do not fit": (["eval", "{shape}", "--data-dir", "{data}"],
                                            r"weights do not fit the model \(size mismatch for conv1.weight"),
    "num_classes of the wrong type": (["eval", "{classes}", "--data-dir", "{data}"],
                                      r"field 'num_classes' is a str \('ten'\); expected int"),
    "quantize --bits out of range": (["quantize", "{base}", "--bits", "12", "--data-dir", "{data}"],
                                     r"--bits=12 is not allowed; allowed: 32 \(fp32\), 16 \(fp16\), 2..8 \(int\), 1 \(binary\)"),
    "quantize --act-bits out of range": (["quantize", "{base}", "--act-bits", "1", "--data-dir", "{data}"],
                                         r"--act-bits=1 is not allowed; allowed: 32 \(float\) or 2..16"),
    "quantize --ends-bits not a number": (["quantize", "{base}", "--ends-bits", "eight", "--data-dir", "{data}"],
                                          r"--ends-bits='eight' is not allowed; allowed: 32 \(fp32\)"),
    "pipeline with a misspelt key deep in a step": (["pipeline", "{pipeline}", "--base", "{base}", "--data-dir", "{data}"],
                                                    r"unknown key 'steps.0.prune.finetune.epochz'"),
    "export header not a mapping": (["footprint", "{list_header}"], r"list.orcx: corrupt export header"),
    "export header with a wrong nonzero count": (["footprint", "{count_header}"],
                                                 r"corrupt export: tensor \S+ holds [\d,]+ nonzero values, its header says"),
    "import of a wrong nonzero count": (["import", "{count_header}", "{tmp}/back.pt"], r"its header says"),
    "export header with entries for a dense tensor": (["footprint", "{entries_header}"],
                                                      r"corrupt export: tensor \S+ is dense, its header gives it 1 "
                                                      r"relative-index entries"),
    "export with bytes after the last tensor": (["import", "{tail_header}", "{tmp}/back.pt"],
                                                r"tail.orcx: corrupt export \(2 bytes after the last tensor"),
    "study: unreachable MLflow": (["study", "run", "{space}", "--mlflow", "http://127.0.0.1:1", "--storage",
                                   "sqlite:///{tmp}/o.db", "--data-dir", "{data}"],
                                  r"--mlflow http://127.0.0.1:1: no MLflow server answers there"),
    "study: SQLite storage in /proc": (["study", "run", "{space}", "--storage", "sqlite:////proc/none/o.db",
                                        "--data-dir", "{data}"], r"--storage /proc/none/o.db: cannot write there"),
    "study: --out unwritable": (["study", "run", "{space}", "--out", "/proc/none", "--storage",
                                 "sqlite:///{tmp}/o.db", "--data-dir", "{data}"], r"--out /proc/none/bad"),
    "study: MLflow store under a file": (["study", "run", "{space}", "--mlflow", "sqlite:///{file}/m.db",
                                          "--storage", "sqlite:///{tmp}/o.db", "--data-dir", "{data}"],
                                         r"--mlflow .*a_file is a file"),
    "study: data dir typo": (["study", "run", "{space}", "--storage", "sqlite:///{tmp}/o.db", "--mlflow",
                              "sqlite:///{tmp}/m.db", "--data-dir", "{tmp}/no-such-data"], r"no-such-data"),
    "study: missing base": (["study", "run", "{space_nobase}", "--storage", "sqlite:///{tmp}/o.db", "--mlflow",
                             "sqlite:///{tmp}/m.db", "--data-dir", "{data}"], r"missing.pt does not exist"),
    "space: ratio range reversed": (["study", "run", "{space_range}", "--storage", "sqlite:///{tmp}/o.db",
                                     "--data-dir", "{data}"], r"dimensions.ratio"),
    "space: more auto start points than trials": (["study", "run", "{space_k}", "--storage", "sqlite:///{tmp}/o.db",
                                                   "--data-dir", "{data}"],
                                                  r"sampler.auto.points=3 is more than budget.trials=1"),
    "space: auto start with no measurable method": (["study", "run", "{space_han}", "--storage",
                                                     "sqlite:///{tmp}/o.db", "--mlflow", "sqlite:///{tmp}/m.db",
                                                     "--data-dir", "{data}", "--out", "{tmp}/s"],
                                                    r"no method of \['han'\] can be measured group by group"),
    "study status: storage that does not exist": (["study", "status", "{space}", "--storage",
                                                   "sqlite:////proc/nope/x.db"],
                                                  r"no study named 'bad' in sqlite:////proc/nope/x.db \(/proc/nope/x.db "
                                                  r"does not exist\)"),
    "study report: storage that is a folder": (["report", "{space}", "--storage", "sqlite:///{tmp}"],
                                               r"no study named 'bad' in .* is a folder, not a database file"),
    "study pareto: storage that does not exist": (["study", "pareto", "{space}", "--storage",
                                                   "sqlite:///{tmp}/nope/x.db"], r"no study named 'bad' in .*does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_before_any_work(name, base, cifar10_dir, tmp_path, bad_files):
    args, pattern = CASES[name]
    space = {"name": "bad", "base": str(base), "dimensions": {"method": ["global_magnitude"], "ratio": [0.5]},
             "budget": {"trials": 1}}
    files = {"base": base, "data": cifar10_dir, "tmp": tmp_path, **bad_files}
    for key, over in (("space", {}), ("space_nobase", {"base": str(tmp_path / "missing.pt")}),
                      ("space_range", {"dimensions": {"method": ["global_magnitude"],
                                                      "ratio": {"low": 0.9, "high": 0.1}}}),
                      ("space_k", {"sampler": {"auto": {"points": 3}}}),
                      ("space_han", {"val_size": 20, "dimensions": {"method": ["han"], "ratio": [0.5]}})):
        files[key] = tmp_path / f"{key}.yaml"
        files[key].write_text(yaml.safe_dump({**space, **over}))
    files["pipeline"] = tmp_path / "pipeline.yaml"
    files["pipeline"].write_text("steps:\n  - prune: {method: global_magnitude, ratio: 0.5, finetune: {epochz: 1}}\n")
    t0 = time.perf_counter()
    result = run(*[a.format(**files) for a in args])
    one_line_error(result, pattern)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "o.db").exists() or name.startswith("space")  # no study opened before the error
    assert not (tmp_path / "nope").exists()  # a read-only command creates nothing
    # the key is named as the user wrote it: no pydantic-internal location parts
    assert "function-after" not in result.output and "invalid value for ''" not in result.output
    assert "constrained-" not in result.output and "global_magnitude." not in result.output  # no union tags


REFUSED_RUNS = {  # name: (the command, its bad value, the corrected value, the pattern the error line must match)
    "quantize --val-size beyond the train split": (["quantize", "--method", "qat", "--finetune-epochs", "0"],
                                                   ["--val-size", "500"], ["--val-size", "20"], r"val_size=500"),
    "prune --stage-ratios beyond the stages": (["prune", "--method", "l1_filter"], ["--stage-ratios", "0.1,0.2,0.3,0.4"],
                                               ["--ratio", "0.5"], r"stage_ratios has 4 entries; resnet8 has 3"),
    "prune --skip of a group the model lacks": (["prune", "--method", "l1_filter", "--ratio", "0.5"],
                                                ["--skip", "nosuchgroup"], [], r"unknown channel group 'nosuchgroup'"),
}


@pytest.mark.parametrize("name", list(REFUSED_RUNS))
def test_a_run_refused_by_a_bad_value_writes_nothing_and_the_corrected_rerun_runs(name, base, cifar10_dir, tmp_path):
    """Model- and data-dependent values are checked before the resume store is created: the refused command
    leaves no OUT.work that the corrected one would have to be told about."""
    (command, *options), bad, fixed, pattern = REFUSED_RUNS[name]
    out = tmp_path / "p.pt"
    rest = [base, *options, "--data-dir", cifar10_dir, "--out", out, "--quiet"]
    one_line_error(run(command, *rest, *bad), pattern)
    assert not (tmp_path / "p.pt.work").exists()
    good = run(command, *rest, *fixed)
    assert good.exit_code == 0, good.output
    assert out.is_file() and not (tmp_path / "p.pt.work").exists()
