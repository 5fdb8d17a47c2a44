import pytest
import torch

from orchestrator.errors import ModelSpecError
from orchestrator.models import ARCHITECTURES, build_model, count_parameters, default_widths

# Published / reference counts (weights, biases, BN affine; no running statistics).
EXPECTED_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
                   "resnet110": 1_727_962}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shape_and_rebuild_from_widths(arch, num_classes):
    model = build_model(arch, num_classes, width_mult=0.25 if arch.startswith(("vgg", "mobile")) else 1.0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)
    clone = build_model(model.arch, num_classes, model.widths)
    assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("arch,n", EXPECTED_PARAMS.items())
def test_resnet_parameter_counts(arch, n):
    assert count_parameters(build_model(arch)) == n


def test_resnet_by_hand():
    # resnet20 = stem 3*16*9 + BN 32, 9 blocks of two 3x3 convs + 2 BN, linear 64*10+10
    convs = sum(2 * w * w * 9 for w in (16, 32, 64)) * 3 - (32 * 32 * 9 - 16 * 32 * 9) - (64 * 64 * 9 - 32 * 64 * 9)
    bn = 2 * (16 + 2 * 3 * (16 + 32 + 64))
    assert count_parameters(build_model("resnet20")) == 3 * 16 * 9 + convs + bn + 650


def test_other_families_known_sizes():
    assert count_parameters(build_model("vgg16")) == 14_724_042
    assert count_parameters(build_model("mobilenetv2")) == 2_236_682
    assert count_parameters(build_model("resnet20b")) - count_parameters(build_model("resnet20")) == \
        16 * 32 + 2 * 32 + 32 * 64 + 2 * 64  # two 1x1 conv + BN shortcuts


def test_any_resnet_depth_and_width_multiplier():
    assert build_model("resnet8")(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert build_model("resnet20", width_mult=2).widths["stages"] == [32, 64, 128]


def test_pruned_widths_build_and_run():
    widths = default_widths("resnet20")
    widths["blocks"] = [[5, 16, 9], [32, 1, 30], [64, 64, 12]]
    widths["stages"] = [8, 16, 32]
    model = build_model("resnet20", 10, widths)
    assert model.layer2[1].conv1.out_channels == 1 and model.layer1[0].conv1.in_channels == 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    vgg = default_widths("vgg11", 0.25)
    vgg["stages"][2] = [7, 9]
    assert build_model("vgg11", 10, vgg).features[8].out_channels == 7


def test_option_a_padding_matches_reference():
    block = build_model("resnet20").layer2[0].shortcut
    x = torch.randn(1, 16, 32, 32)
    y = block(x)
    assert y.shape == (1, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()


def test_bad_specs_are_named():
    with pytest.raises(ModelSpecError, match="unknown arch 'resnet21'"):
        build_model("resnet21")
    with pytest.raises(ModelSpecError, match="unknown arch 'alexnet'.*allowed: resnet20"):
        build_model("alexnet")
    with pytest.raises(ModelSpecError, match="'stages': List should have at least 3"):
        build_model("resnet20", 10, {"shortcut": "A", "stages": [16, 32], "blocks": [[16]] * 3})
    with pytest.raises(ModelSpecError, match="'blocks.0.hidden': Input should be greater"):
        build_model("mobilenetv2", 10, {"stem": 8, "blocks": [{"hidden": 0, "out": 8, "stride": 1}], "head": 8})
    with pytest.raises(ModelSpecError, match="ResNet-20, not a ResNet-56"):
        build_model("resnet56", 10, default_widths("resnet20"))
    with pytest.raises(ModelSpecError, match="only widen"):
        build_model("resnet20", 10, {"shortcut": "A", "stages": [32, 16, 64], "blocks": [[8]] * 3})
    with pytest.raises(ModelSpecError, match="unknown key 'depth' in the width spec"):
        build_model("vgg11", 10, {"stages": [[1]] * 5, "depth": 3})
    with pytest.raises(ModelSpecError, match="num_classes=1"):
        build_model("resnet20", 1)
