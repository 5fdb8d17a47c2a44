import pytest
import torch
from torch.nn.utils import prune

from conftest import with_bn_stats
from orchestrator.checkpoint import from_model, load_model, save_checkpoint
from orchestrator.errors import OrchestratorError
from orchestrator.models import build_model, count_parameters
from orchestrator.pruning.surgery import channel_groups, filter_l1, remove_channels, zero_channels_



def _half_of_every_group(model):
    keep = {}
    for name, g in channel_groups(model).items():
        scores = filter_l1(model, g)
        keep[name] = torch.topk(scores, max(1, len(scores) // 2)).indices
    return keep


@torch.no_grad()
def _zero_removed(model, keep):
    """Zero the removed channels in place: producer filters and their BN scale and shift."""
    for name, g in channel_groups(model).items():
        if name not in keep:
            continue
        drop = torch.ones(g.size(model), dtype=torch.bool)
        drop[keep[name]] = False
        for bn in g.producers + g.bns + g.depthwise:
            m = model.get_submodule(bn)
            m.weight[drop] = 0
            if getattr(m, "bias", None) is not None:
                m.bias[drop] = 0


@pytest.mark.parametrize("arch,mult", [("resnet20", 1.0), ("resnet20b", 1.0), ("vgg11", 0.25),
                                       ("mobilenetv2", 0.25)])
def test_removed_channels_give_the_same_outputs_as_zeroed_ones(arch, mult):
    torch.manual_seed(0)
    model = with_bn_stats(build_model(arch, width_mult=mult))
    keep = _half_of_every_group(model)
    _zero_removed(model, keep)
    small = remove_channels(model, keep)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), small(x), atol=1e-5, rtol=1e-4)
    assert count_parameters(small) < count_parameters(model)


def test_resnet_widths_and_reload(tmp_path):
    model = with_bn_stats(build_model("resnet20"))
    small = remove_channels(model, {"layer2.1.conv1": torch.tensor([0, 5, 7]), "layer1.0.conv1": torch.arange(4)})
    assert small.widths["blocks"][1] == [32, 3, 32] and small.widths["blocks"][0][0] == 4
    assert small.layer2[1].conv2.in_channels == 3
    assert torch.equal(small.layer2[1].conv1.weight, model.layer2[1].conv1.weight[[0, 5, 7]])
    save_checkpoint(tmp_path / "s.pt", from_model(small, "cifar10", {"mean": [0] * 3, "std": [1] * 3}))
    loaded, ckpt = load_model(tmp_path / "s.pt")
    assert ckpt.widths == small.widths and not any(k.endswith(("_orig", "_mask")) for k in ckpt.state_dict)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def test_bad_requests():
    model = build_model("resnet8")
    with pytest.raises(OrchestratorError, match="unknown channel group 'layer9.conv1'"):
        remove_channels(model, {"layer9.conv1": torch.tensor([0])})
    with pytest.raises(OrchestratorError, match=r"indices in \[0, 15\]"):
        remove_channels(model, {"layer1.0.conv1": torch.tensor([16])})
    with pytest.raises(OrchestratorError, match="kept channels must be 1..16"):
        remove_channels(model, {"layer1.0.conv1": torch.tensor([], dtype=torch.long)})
    prune.l1_unstructured(model.conv1, "weight", amount=0.5)
    with pytest.raises(OrchestratorError, match="finalize_"):
        remove_channels(model, {"layer1.0.conv1": torch.tensor([0])})


def test_option_b_stream_groups_are_coupled_and_removable():
    model = with_bn_stats(build_model("resnet20b"))
    groups = channel_groups(model)
    s2 = groups["layer2.stream"]
    assert s2.kind == "stream" and s2.path == ("stages", 1)
    assert "layer2.0.shortcut.0" in s2.producers and "layer3.0.shortcut.0" in s2.consumers
    assert "layer2.0.conv1" not in s2.consumers and "layer3.0.conv1" in s2.consumers
    assert groups["layer1.stream"].producers[0] == "conv1" and "linear" in groups["layer3.stream"].consumers
    assert "layer1.stream" not in channel_groups(build_model("resnet20"))  # option A: stream stays
    keep = {"layer2.stream": torch.arange(0, 32, 2), "layer3.stream": torch.arange(40)}
    small = remove_channels(model, keep)
    assert small.widths["stages"] == [16, 16, 40] and small.linear.in_features == 40
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(zero_channels_(model, keep)(x), small(x), atol=1e-5, rtol=1e-4)


def test_model_families_own_their_channel_groups_and_stages():
    from orchestrator.pruning.channels import group_ratios
    from orchestrator.pruning.surgery import channel_groups
    model = build_model("mobilenetv2", width_mult=0.25)
    groups = channel_groups(model)
    # the reference's rows (t, c, n, s): blocks 1-2 are stage 2, 3-5 stage 3, ...; block 0 does not expand
    assert [g.stage for g in groups.values()][:5] == [1, 1, 2, 2, 2] and "blocks.0.conv.0" not in groups
    ratios = group_ratios(model, groups, 0.0, stage_ratios=[0.0, 0.5, 0.25, 0, 0, 0, 0])  # one per stage, any family
    assert {r for n, r in ratios.items() if groups[n].stage == 1} == {0.5} and ratios["blocks.16.conv.0"] == 0.0
    resnet = build_model("resnet20b")
    assert {g.stage for g in channel_groups(resnet).values() if g.kind == "stream"} == {0, 1, 2}
    with pytest.raises(OrchestratorError, match="no channel groups known for Linear"):
        channel_groups(torch.nn.Linear(2, 2))
