import json

import pytest
import torch

from conftest import bad_config
from orchestrator.errors import OrchestratorError
from orchestrator.footprint import measure
from orchestrator.footprint.export import load_export
from orchestrator.pipeline import PipelineConfig, hold_zeros_, run_pipeline
from orchestrator.pruning import finalize_, prune_
from orchestrator.pruning.core import effective_weight, prunable_layers

STEPS = [{"prune": {"method": "l1_filter", "ratio": 0.5}},
         {"finetune": {"epochs": 1, "batch_size": 16, "kd": {"alpha": 0.5}}},
         {"prune": {"method": "global_magnitude", "ratio": 0.6}},
         {"quantize": {"method": "qat", "bits": 4, "act_bits": 8, "finetune": {"epochs": 1, "batch_size": 16}}}]


def test_pipeline_applies_steps_in_order_and_records_the_exported_footprint(base, cifar10_dir, tmp_path):
    config = PipelineConfig(val_size=20, steps=STEPS)
    result = run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
    steps = result["steps"]
    assert [s["step"] for s in steps] == ["base", "prune", "finetune", "prune", "quantize"]
    assert steps[1]["params"] < steps[0]["params"]  # channels removed
    assert steps[3]["nonzero"] < steps[2]["nonzero"] and steps[3]["params"] == steps[2]["params"]
    assert steps[4]["param_bits"] < steps[3]["param_bits"] and steps[4]["act_bits"] == 8
    exported, header = load_export(result["export"])
    fp = measure(exported)
    final = result["final"]
    assert final["param_bits"] == fp.param_bits and final["total_bits"] == fp.total_bits
    assert 0 <= final["payload_bytes"] - fp.param_bits / 8 <= 3 * len(fp.tensors)  # streams padded to bytes
    assert final["compression"] == pytest.approx(steps[0]["total_bits"] / fp.total_bits)
    layers = prunable_layers(exported)
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros >= 0.6 * sum(m.weight.numel() for m in layers.values()) - 1  # sparsity survived QAT
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["final"] == final and not (tmp_path / "p.pt.work").exists()


def test_pipeline_resumes_after_a_kill_without_redoing_finished_steps(base, cifar10_dir, tmp_path, monkeypatch):
    import orchestrator.pipeline as pl
    config = PipelineConfig(val_size=20, steps=STEPS[:3])
    real, calls = pl.finetune, []

    def dies(*a, **kw):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(pl, "finetune", dies)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
    records = json.loads((tmp_path / "p.pt.work" / "records.json").read_text())
    assert [r["step"] for r in records] == ["base", "prune"]
    monkeypatch.setattr(pl, "finetune", real)
    pruned = []
    real_prune = pl.prune_
    monkeypatch.setattr(pl, "prune_", lambda *a, **kw: pruned.append(a[1]) or real_prune(*a, **kw))
    result = run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
    assert [s["step"] for s in result["steps"]] == ["base", "prune", "finetune", "prune"]
    assert [(p.method, p.ratio) for p in pruned] == [("global_magnitude", 0.6)]  # the first prune was not redone


def test_a_run_stopped_before_precision_had_one_encoding_resumes(base, cifar10_dir, tmp_path, monkeypatch):
    """A store stamped with the older quantize encoding ({'format': 'int', 'bits': 4}, act_bits null) names the
    same pipeline: its finished prune step is kept, not refused as another pipeline's."""
    import orchestrator.pipeline as pl
    config = PipelineConfig(val_size=0, steps=[{"prune": {"method": "global_magnitude", "ratio": 0.5}},
                                               {"quantize": {"bits": 4, "calibration_images": 16}}])
    def dies(*a):
        raise KeyboardInterrupt

    monkeypatch.setitem(pl.STEP_HANDLERS, "quantize", dies)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
    stamp = tmp_path / "p.pt.work" / "pipeline.json"
    old = json.loads(stamp.read_text())
    old["pipeline"]["steps"][1]["quantize"].update({"format": "int", "act_bits": None})
    stamp.write_text(json.dumps(old))
    monkeypatch.undo()
    pruned = []
    real_prune = pl.prune_
    monkeypatch.setattr(pl, "prune_", lambda *a, **kw: pruned.append(a[1]) or real_prune(*a, **kw))
    result = run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
    assert [s["step"] for s in result["steps"]] == ["base", "prune", "quantize"] and pruned == []


@pytest.mark.parametrize("finished", [0, 1])
def test_a_store_of_another_pipeline_is_replaced_unless_it_holds_finished_steps(finished, base, cifar10_dir, tmp_path):
    work = tmp_path / "p.pt.work"
    work.mkdir()
    (work / "pipeline.json").write_text(json.dumps({"base": "other.pt", "pipeline": {}}))
    (work / "records.json").write_text(json.dumps([{"step": "base"}] + [{"step": "prune"}] * finished))
    config = PipelineConfig(val_size=0, steps=[{"prune": {"method": "global_magnitude", "ratio": 0.5}}])
    if finished:
        with pytest.raises(OrchestratorError, match="holds the unfinished steps of another pipeline or base"):
            run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
        assert (work / "records.json").is_file()  # kept: never thrown away
    else:
        result = run_pipeline(config, base=base, data_dir=cifar10_dir, out=tmp_path / "p.pt")
        assert [s["step"] for s in result["steps"]] == ["base", "prune"] and not work.exists()


def test_finetune_step_keeps_pruned_weights_zero():
    from orchestrator.models import build_model
    model = finalize_(prune_(build_model("resnet8"), {"method": "global_magnitude", "ratio": 0.5}))
    zeros = {n: m.weight == 0 for n, m in prunable_layers(model).items()}
    hold_zeros_(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    for n, m in prunable_layers(model).items():
        assert not effective_weight(m)[zeros[n]].any()


def test_bad_pipelines_are_rejected_with_the_step_or_key_named():
    with pytest.raises(bad_config(), match="unknown step 'distil'"):
        PipelineConfig(steps=[{"distil": {}}])
    with pytest.raises(bad_config(), match="quantize must come after"):
        PipelineConfig(steps=[{"quantize": {}}, {"finetune": {}}])
    with pytest.raises(bad_config(), match="bits"):
        PipelineConfig(steps=[{"quantize": {"bits": "eight"}}])
    with pytest.raises(bad_config(), match="unknown pruning method 'magic'"):
        PipelineConfig(steps=[{"prune": {"method": "magic"}}])
    with pytest.raises(bad_config(), match="stepz"):
        PipelineConfig.model_validate({"stepz": [], "steps": [{"finetune": {}}]})
    with pytest.raises(OrchestratorError, match="no base checkpoint"):
        run_pipeline(PipelineConfig(steps=[{"finetune": {}}]), out="x.pt")


def test_shared_steps_are_cached_by_config_hash(base, cifar10_dir, tmp_path, monkeypatch):
    import orchestrator.pipeline as pl
    calls = []
    real_prune = pl.prune_
    monkeypatch.setattr(pl, "prune_", lambda *a, **kw: calls.append(a[1]) or real_prune(*a, **kw))
    prune = {"prune": {"method": "l1_filter", "ratio": 0.5}}
    cache = tmp_path / "cache"
    a = run_pipeline(PipelineConfig(val_size=20, steps=[prune, {"quantize": {"bits": 4}}]), base=base,
                     data_dir=cifar10_dir, out=tmp_path / "a.pt", cache_dir=cache)
    b = run_pipeline(PipelineConfig(val_size=20, steps=[prune, {"quantize": {"bits": 2}}]), base=base,
                     data_dir=cifar10_dir, out=tmp_path / "b.pt", cache_dir=cache)
    assert len(calls) == 1 and a["cache_hits"] == 0 and b["cache_hits"] == 2  # base record + pruned model
    assert a["steps"][1] == b["steps"][1] and a["steps"][2]["param_bits"] > b["steps"][2]["param_bits"]
    c = run_pipeline(PipelineConfig(val_size=20, steps=[{"prune": {"method": "l1_filter", "ratio": 0.25}}]),
                     base=base, data_dir=cifar10_dir, out=tmp_path / "c.pt", cache_dir=cache)
    assert len(calls) == 2 and c["cache_hits"] == 1  # another ratio is another step


def test_steps_are_typed_once_and_dump_with_every_default():
    from orchestrator.pruning.structured import L1Filter
    from orchestrator.quant import QuantConfig
    from orchestrator.steps import FinetuneStep, PruneStep, QuantizeStep
    config = PipelineConfig(steps=STEPS[:2] + [{"quantize": None}])
    assert [type(s) for s in config.steps] == [PruneStep, FinetuneStep, QuantizeStep]
    assert isinstance(config.steps[0].prune, L1Filter) and config.steps[0].prune.ratio == 0.5
    assert config.steps[2].quantize == QuantConfig() and config.uses_kd()  # `- quantize:` means the defaults
    dumped = config.model_dump(mode="json")["steps"]
    assert dumped[0]["prune"]["min_keep"] == 1 and dumped[1]["finetune"]["kd"] == {"temperature": 4.0, "alpha": 0.5}
    assert PipelineConfig.model_validate(config.model_dump()) == config  # a record re-validates to the same config
    with pytest.raises(bad_config(), match=r"steps\[0\]: unknown step 'distil'"):
        PipelineConfig(steps=[{"distil": {}}])

