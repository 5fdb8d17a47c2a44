import copy

import pytest
import torch
from torch import nn

from conftest import TOY_NORM as NORM, bad_config, toy_data, toy_split, with_bn_stats
from orchestrator.errors import OrchestratorError
from orchestrator.footprint import measure
from orchestrator.models import build_model, count_parameters
from orchestrator.pruning import METHODS, finalize_, parse_config, prune_, sparsity
from orchestrator import finetune as finetune_layer
from orchestrator.pruning.channels import keep_global, keep_per_group
from orchestrator.pruning.core import effective_weight, prunable_layers
from orchestrator.pruning.sensitivity import ratios_within, sensitivity
from orchestrator.pruning.thinet import greedy_removal, least_squares_scales

LI_PRUNED_B_SKIP = ["layer1.7.conv1", "layer1.8.conv1", "layer2.0.conv1", "layer2.7.conv1", "layer3.0.conv1",
                    "layer3.8.conv1"]  # Li et al.'s layers 16, 18, 20, 34, 38, 54




FT = {"epochs": 1, "batch_size": 16}


def test_every_method_is_registered_under_its_config_name():
    assert {"global_magnitude", "layer_magnitude", "random", "han", "lottery", "l1_filter", "random_filter",
            "thinet", "slimming", "taylor_filter"} <= set(METHODS)
    for name, (cls, _) in METHODS.items():
        assert cls().method == name


def test_global_magnitude_hits_the_ratio_exactly_and_finalizes():
    model = build_model("resnet8")
    pruned = finalize_(prune_(model, {"method": "global_magnitude", "ratio": 0.75}))
    layers = prunable_layers(pruned)
    total = sum(m.weight.numel() for m in layers.values())
    assert sum(int((m.weight == 0).sum()) for m in layers.values()) == round(0.75 * total)
    assert not [k for k in pruned.state_dict() if k.endswith(("_orig", "_mask"))]


def test_layer_magnitude_prunes_every_layer_equally_and_random_differs_from_magnitude():
    s = sparsity(finalize_(prune_(build_model("resnet8"), {"method": "layer_magnitude", "ratio": 0.5})))
    assert all(abs(v - 0.5) < 0.02 for v in s.values())
    torch.manual_seed(0)
    model = build_model("resnet8")
    a = finalize_(prune_(copy.deepcopy(model), {"method": "global_magnitude", "ratio": 0.5}))
    b = finalize_(prune_(copy.deepcopy(model), {"method": "random", "ratio": 0.5}))
    assert sparsity(a)["total"] == sparsity(b)["total"]
    assert not torch.equal(a.layer1[0].conv1.weight != 0, b.layer1[0].conv1.weight != 0)


def test_han_masks_only_grow_and_retraining_keeps_pruned_weights_zero(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("resnet8", width_mult=0.5)
    data = toy_data(tmp_path)
    seen = []
    real_train = finetune_layer.train

    def spy(m, *a, **kw):  # zeros before each round's retraining must still be zero after it
        zeros = {n: (effective_weight(l) == 0) for n, l in prunable_layers(m).items()}
        seen.append(zeros)
        out = real_train(m, *a, **kw)
        for n, l in prunable_layers(m).items():
            assert not effective_weight(l)[zeros[n]].any()
        return out

    monkeypatch.setattr(finetune_layer, "train", spy)
    prune_(model, {"method": "han", "ratio": 0.8, "rounds": 3, "finetune": FT}, data)
    monkeypatch.undo()
    levels = [sum(int(z.sum()) for z in r.values()) for r in seen]
    assert levels == sorted(levels) and len(levels) == 3
    for prev, cur in zip(seen, seen[1:]):
        assert all((cur[n] | ~prev[n]).all() for n in prev)  # once zero, always zero
    assert sparsity(finalize_(model))["total"] == pytest.approx(0.8, abs=1e-3)
    assert [r["sparsity"] for r in data.log if "sparsity" in r] == pytest.approx([1 - 0.2 ** (k / 3) for k in (1, 2, 3)], abs=1e-3)


def test_han_resumes_after_a_kill_with_the_same_result(tmp_path, monkeypatch):
    config = {"method": "han", "ratio": 0.6, "rounds": 2, "finetune": FT}
    torch.manual_seed(0)
    start = build_model("resnet8", width_mult=0.5)
    reference = finalize_(prune_(copy.deepcopy(start), config, toy_data()))
    real_train, calls = finetune_layer.train, []

    def killed_in_round_two(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*a, **kw)

    monkeypatch.setattr(finetune_layer, "train", killed_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        prune_(copy.deepcopy(start), config, toy_data(tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "round1.state").is_file() and not (tmp_path / "round2.state").exists()
    resumed = finalize_(prune_(copy.deepcopy(start), config, toy_data(tmp_path)))
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_lottery_rewinds_surviving_weights_and_reaches_the_ratio():
    torch.manual_seed(0)
    model = build_model("resnet8", width_mult=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = {"method": "lottery", "ratio": 0.5, "rounds": 2, "finetune": {**FT, "epochs": 0}}
    pruned = finalize_(prune_(model, config, toy_data()))  # no training: the ticket is the start, masked
    for name, m in prunable_layers(pruned).items():
        w0 = start[f"{name}.weight"]
        kept = m.weight != 0
        assert torch.equal(m.weight[kept], w0[kept])
    assert sparsity(pruned)["total"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(OrchestratorError, match="'lottery'.*needs data"):
        prune_(build_model("resnet8"), {"method": "lottery"})


def test_li_resnet56_pruned_b_reproduces_the_papers_reductions():
    """Li et al. 2017, Table 1: ResNet-56-pruned-B has 13.7% fewer parameters and 27.6% fewer FLOPs."""
    model = build_model("resnet56")
    small = prune_(model, {"method": "l1_filter", "stage_ratios": [0.6, 0.3, 0.1], "skip": LI_PRUNED_B_SKIP})
    assert 1 - count_parameters(small) / count_parameters(model) == pytest.approx(0.137, abs=0.0006)
    assert 1 - measure(small).macs / measure(model).macs == pytest.approx(0.276, abs=0.0006)
    assert small.widths["blocks"][0] == [6] * 7 + [16, 16] and small.widths["blocks"][2][1] == 57
    assert not [k for k in small.state_dict() if k.endswith(("_orig", "_mask"))]


def test_l1_filter_keeps_the_largest_filters_and_matches_zeroing():
    model = with_bn_stats(build_model("resnet8"))
    with torch.no_grad():
        model.layer1[0].conv1.weight[:4] *= 10  # these four filters now have the largest L1 norms
    small = prune_(copy.deepcopy(model), {"method": "l1_filter", "ratio": 0.75})
    assert small.widths["blocks"] == [[4], [8], [16]]
    assert torch.equal(small.layer1[0].conv1.weight, model.layer1[0].conv1.weight[:4])


def test_stagewise_l1_filter_retrains_after_each_stage(tmp_path):
    data = toy_data()
    small = prune_(build_model("resnet8", width_mult=0.5),
                   {"method": "l1_filter", "ratio": 0.5, "mode": "stagewise", "finetune": FT}, data)
    assert [r["step"] for r in data.log] == ["stage1", "stage2", "stage3"]
    assert small.widths["blocks"] == [[4], [8], [16]]


def test_sensitivity_and_ratios_within():
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    table = sensitivity(model, toy_split(20), NORM, ratios=[0.5, 0.9])
    assert set(table["groups"]) == {"layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"}
    assert all(set(row) == {"0.5", "0.9"} for row in table["groups"].values())
    t = {"baseline": 0.9, "groups": {"a": {"0.1": 0.9, "0.5": 0.85, "0.9": 0.89}, "b": {"0.1": 0.5}}}
    assert ratios_within(t, 0.02) == {"a": 0.1, "b": 0.0}  # stops at the first big drop; b is skipped
    small = prune_(model, {"method": "l1_filter", "max_drop": 1.0, "sensitivity_ratios": [0.5]}, toy_data())
    assert small.widths["blocks"] == [[4], [8], [16]]


def test_channel_selection_counts():
    scores = {"a": torch.tensor([5.0, 1, 2, 3]), "b": torch.tensor([0.1, 0.2])}
    # 6 channels, 3 removed; each group's best one is reserved, then the highest scores win
    assert keep_global(scores, 0.5)["a"].tolist() == [0, 3] and keep_global(scores, 0.5)["b"].tolist() == [1]
    assert keep_per_group(scores, {"a": 0.5})["a"].tolist() == [0, 3] and "b" not in keep_per_group(scores, {"a": 0.5})


def test_slimming_removes_the_smallest_bn_scales_globally():
    model = with_bn_stats(build_model("resnet8"))
    with torch.no_grad():
        model.layer2[0].bn1.weight[:] = 1e-3  # the smallest gammas anywhere: slimming must take these first
    small = prune_(model, {"method": "slimming", "ratio": 0.25, "sparsify": {"epochs": 0}})
    assert small.widths["blocks"] == [[16], [4], [64]]  # 112 channels, round(0.25 x 112) = 28 removed, all in layer2


def test_slimming_penalty_shrinks_bn_scales():
    torch.manual_seed(0)
    model = build_model("resnet8", width_mult=0.5)
    gammas = lambda m: torch.cat([m.get_submodule(f"layer{s}.0.bn1").weight.detach() for s in (1, 2, 3)]).abs().sum()
    plain, slim = copy.deepcopy(model), copy.deepcopy(model)
    ft = {**FT, "weight_decay": 0.0}
    prune_(plain, {"method": "slimming", "penalty": 0.0, "ratio": 0.0, "sparsify": ft}, toy_data())
    small = prune_(slim, {"method": "slimming", "penalty": 0.05, "ratio": 0.0, "sparsify": ft}, toy_data())
    assert gammas(small) < gammas(plain)


def test_thinet_greedy_finds_the_channels_that_do_not_matter():
    torch.manual_seed(0)
    contrib = torch.randn(500, 6)
    contrib[:, [1, 4]] *= 1e-3  # channels 1 and 4 barely reach the next layer
    assert sorted(greedy_removal(contrib, 2)) == [1, 4]
    contrib[:, 5] = -contrib[:, 0]  # channels 0 and 5 cancel: removing both together costs nothing
    assert sorted(greedy_removal(contrib, 4)) == [0, 1, 4, 5]
    scales = least_squares_scales(contrib, torch.tensor([2, 3]))
    assert torch.allclose(scales, torch.ones(2), atol=0.01)


def test_thinet_removes_channels_the_next_layer_ignores_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = with_bn_stats(build_model("resnet8"))
    with torch.no_grad():
        model.layer1[0].conv2.weight[:, 8:] = 0  # conv2 reads nothing from channels 8..15
        model.layer1[0].conv1.weight[8:] *= 5  # and those have the largest filters (L1 would keep them)
    small = prune_(copy.deepcopy(model), {"method": "thinet", "ratio": 0, "ratios": {"layer1.0.conv1": 0.5}, "images": 16},
                   toy_data())
    assert small.widths["blocks"] == [[8], [32], [64]]
    assert torch.equal(small.layer1[0].conv1.weight, model.layer1[0].conv1.weight[:8])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), model(x), atol=1e-4, rtol=1e-3)
    l1 = prune_(copy.deepcopy(model), {"method": "l1_filter", "ratio": 0, "ratios": {"layer1.0.conv1": 0.5}})
    assert torch.equal(l1.layer1[0].conv1.weight, model.layer1[0].conv1.weight[8:])


@pytest.mark.parametrize("arch", ["vgg11", "mobilenetv2"])
def test_thinet_runs_on_vgg_and_mobilenet(arch):
    model = with_bn_stats(build_model(arch, width_mult=0.25))
    small = prune_(model, {"method": "thinet", "ratio": 0.5, "images": 8, "locations": 4}, toy_data())
    assert count_parameters(small) < count_parameters(model)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["resnet20b", "vgg11", "mobilenetv2"])
def test_structured_methods_cover_the_zoo_and_coupled_groups(arch):
    model = with_bn_stats(build_model(arch, width_mult=0.5))
    small = prune_(copy.deepcopy(model), {"method": "l1_filter", "ratio": 0.5, "groups": "all"})
    assert count_parameters(small) < count_parameters(model)
    if arch == "resnet20b":
        assert small.widths["stages"] == [4, 8, 16]
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_configs_are_clear_errors():
    model = build_model("resnet8")
    with pytest.raises(OrchestratorError, match="unknown pruning method 'magic'; allowed: .*global_magnitude"):
        prune_(model, {"method": "magic"})
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(bad_config(), match="ratio"):
            prune_(model, {"method": "global_magnitude", "ratio": bad})
    with pytest.raises(bad_config(), match="rounds"):
        parse_config({"method": "global_magnitude", "rounds": 3})  # a key of another method
    with pytest.raises(OrchestratorError, match="'thinet'.*needs data"):
        prune_(model, {"method": "thinet"})
    with pytest.raises(OrchestratorError, match="needs data"):
        prune_(model, {"method": "global_magnitude", "finetune": {"epochs": 1}})
    with pytest.raises(OrchestratorError, match="unknown channel group 'layer9.0.conv1'"):
        prune_(model, {"method": "l1_filter", "skip": ["layer9.0.conv1"]})
    with pytest.raises(OrchestratorError, match="stage_ratios has 2 entries"):
        prune_(model, {"method": "l1_filter", "stage_ratios": [0.1, 0.2]})
    with pytest.raises(OrchestratorError, match="no prunable"):
        prune_(nn.Sequential(nn.ReLU()), {"method": "global_magnitude"})


def test_taylor_filter_scores_channels_that_cannot_change_the_loss_as_zero():
    torch.manual_seed(0)
    model = with_bn_stats(build_model("resnet8"))
    with torch.no_grad():
        model.layer1[0].conv2.weight[:, :4] = 0  # channels 0..3 of layer1.0's inner group reach nothing
    from orchestrator.pruning.taylor import taylor_scores
    scores = taylor_scores(model, toy_data(), 32, 16, ("internal",))
    s = scores["layer1.0.conv1"]
    assert torch.all(s[:4] == 0) and torch.all(s[4:] > 0)
    small = prune_(model, {"method": "taylor_filter", "ratio": 0, "ratios": {"layer1.0.conv1": 0.25}, "images": 32},
                   toy_data())
    assert torch.equal(small.layer1[0].conv1.weight, model.layer1[0].conv1.weight[4:])


def test_bn_recalibration_matches_the_statistics_of_the_pruned_net():
    from orchestrator.train import recalibrate_bn
    torch.manual_seed(0)
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    data = toy_data()
    pruned = prune_(copy.deepcopy(model), {"method": "random", "ratio": 0.5, "bn_recalibration": 48}, data)
    # reference: the batch statistics of conv1's output over the same augmented images, computed directly
    from orchestrator.loader import DeviceLoader
    x, _ = next(iter(DeviceLoader(data.train, len(data.train), NORM["mean"], NORM["std"], train=True)))
    assert len(data.train) >= 48  # one batch holds every image recalibration saw
    with torch.no_grad():
        out = pruned.conv1(x)
    assert torch.allclose(pruned.bn1.running_mean, out.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(pruned.bn1.running_var, out.var((0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-4)
    assert pruned.bn1.momentum == model.bn1.momentum and not pruned.training
    with pytest.raises(OrchestratorError, match="needs data"):
        prune_(copy.deepcopy(model), {"method": "random", "bn_recalibration": 10})
    plain = nn.Sequential(nn.Conv2d(3, 3, 1))
    before = copy.deepcopy(plain.state_dict())
    assert recalibrate_bn(plain, data.train, NORM, 10) is plain  # no BN: returned unchanged
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_bn_recalibration_sees_the_augmented_images_the_base_trained_on():
    """White images: plain ones give a BN on the input the mean 1.0 exactly; the zero-padded crops the zoo trains
    with put black borders in, so the re-estimated mean is lower (the base's statistics are of augmented
    images; plain ones cost ResNet-20 2.2 points). Reproducible: the same call gives the same statistics."""
    from orchestrator.data import Split
    from orchestrator.train import recalibrate_bn
    norm = {"mean": [0.0] * 3, "std": [1.0] * 3}
    white = Split("train", torch.full((64, 3, 32, 32), 255, dtype=torch.uint8), torch.zeros(64, dtype=torch.long), ["a"])
    bn = recalibrate_bn(nn.Sequential(nn.BatchNorm2d(3)), white, norm, 64)[0]
    assert torch.all(bn.running_mean < 0.999) and torch.all(bn.running_mean > 1 - 2 * 4 / 32)  # borders of <= 4 px
    again = recalibrate_bn(nn.Sequential(nn.BatchNorm2d(3)), white, norm, 64)[0]
    assert torch.equal(bn.running_mean, again.running_mean) and torch.equal(bn.running_var, again.running_var)
