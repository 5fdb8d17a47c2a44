import copy

import pytest
import torch

from conftest import bad_config, toy_data, with_bn_stats
from orchestrator.checkpoint import from_model, load_model, save_checkpoint
from orchestrator.errors import OrchestratorError
from orchestrator.footprint import measure
from orchestrator.models import build_model
from orchestrator.pruning import finalize_, prune_
from orchestrator.quant import QuantConfig, quantize_
from orchestrator.qformat import ActQuant
from orchestrator.quant.fake import WeightFakeQuant

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def naive_int(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Reference: symmetric per-output-channel rounding, one channel at a time."""
    out = torch.empty_like(w)
    hi = 2 ** (bits - 1) - 1
    for c in range(w.shape[0]):
        s = w[c].abs().max() / hi
        out[c] = torch.clamp(torch.round(w[c] / s), -hi, hi) * s
    return out


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_ptq_matches_a_naive_reference_and_keeps_ends_at_8_bits(bits):
    torch.manual_seed(0)
    model = build_model("resnet8")
    ref = {n: naive_int(m.weight.detach(), bits) for n, m in model.named_modules() if hasattr(m, "weight")
           and m.weight is not None and m.weight.dim() > 1}
    quantize_(model, {"bits": bits})
    for name, m in model.named_modules():
        if name in ("conv1", "linear"):
            assert m.weight_bits == 8
        elif name in ref:
            assert m.weight_bits == bits and m.weight_format == "int"
            assert torch.allclose(m.weight, ref[name], atol=1e-6)
            assert max(len(ch.unique()) for ch in m.weight) <= 2 ** bits - 1


def test_fake_quant_has_at_most_2_to_the_k_values_per_channel_and_passes_gradients():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    for bits in (2, 3, 4):
        q = WeightFakeQuant(bits)(w)
        assert all(len(ch.unique()) <= 2 ** bits for ch in q)
        grad = torch.randn_like(q)
        w.grad = None
        q.backward(grad)
        assert torch.equal(w.grad, grad)  # straight-through
    act = ActQuant(4).train()
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    y = act(x)
    assert len(y.unique()) <= 16
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("bits,signed", [(4, False), (3, True), (8, True)])
def test_activation_fake_quant_in_training_equals_the_traceable_expression_bit_for_bit(bits, signed, monkeypatch):
    """Eager passes (QAT, evaluation) run an in-place kernel; torch.export traces tensor ops: same values, same
    gradient."""
    torch.manual_seed(bits)
    act = ActQuant(bits).train()
    for _ in range(3):  # the range is a moving average: train on a few batches first
        x = torch.randn(4, 8, 16, 16) * 3
        x = (x if signed else x.relu()).requires_grad_()
        y = act(x)
        grad = torch.randn_like(y)
        y.backward(grad)
        assert torch.equal(x.grad, grad)  # straight-through
        act.eval()
        assert torch.equal(y.detach(), act(x.detach()))  # the eval path, same range
        monkeypatch.setattr(ActQuant, "fused", False)  # the expression torch.export traces
        assert torch.equal(y.detach(), act(x.detach()))
        monkeypatch.undo()
        act.train()
    assert bool(act.signed) == signed
    assert len(y.unique()) <= 2 ** bits


def test_binary_weights_are_plus_minus_scale_and_pruned_zeros_survive_qat():
    torch.manual_seed(0)
    model = finalize_(prune_(build_model("resnet8", width_mult=0.5), {"method": "global_magnitude", "ratio": 0.5}))
    zeros = {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    quantize_(model, {"method": "qat", "bits": 1, "finetune": {"epochs": 1, "batch_size": 16}}, toy_data())
    conv = model.layer2[0].conv1
    assert conv.weight_format == "binary" and conv.weight_bits == 1
    for c, ch in enumerate(conv.weight):
        assert torch.allclose(ch[ch != 0].abs(), conv.weight_scale[c].expand(int((ch != 0).sum())))
    for n, m in model.named_modules():
        if n in zeros:
            assert torch.equal(m.weight == 0, zeros[n]), n  # QAT revived no pruned weight


def test_qat_with_activation_bits_and_mixed_precision_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet8", width_mult=0.5)
    config = {"method": "qat", "bits": 4, "layer_bits": {"layer3.0.conv2": 2}, "act_bits": 4,
              "finetune": {"epochs": 1, "batch_size": 16}}
    quantize_(model, config, toy_data())
    assert model.layer3[0].conv2.weight_bits == 2 and model.layer1[0].conv1.weight_bits == 4
    assert model.act_bits == 4 and measure(model).act_bits == 4
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    save_checkpoint(tmp_path / "q.pt", from_model(model, "cifar10", NORM))
    loaded, ckpt = load_model(tmp_path / "q.pt")
    assert ckpt.quantization["layer1.0.conv1"] == {"format": "int", "bits": 4, "act_bits": 4}
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    assert measure(loaded).param_bits == measure(model).param_bits


def test_ptq_activation_calibration_sets_ranges():
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    quantize_(model, {"bits": 8, "act_bits": 8, "calibration_images": 16}, toy_data())
    ranges = [m.max.item() for m in model.modules() if isinstance(m, ActQuant)]
    assert len(ranges) == 7 and all(r > 0 for r in ranges)  # 8 conv/linear layers; the first reads the image
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)


def test_bad_bit_widths_and_names_are_clear_errors():
    model = build_model("resnet8")
    for bad in (0, 33, "eight", 2.5, True):
        with pytest.raises(bad_config(), match="bits"):
            quantize_(copy.deepcopy(model), {"bits": bad})
    with pytest.raises(bad_config(), match="act_bits"):
        QuantConfig(act_bits=1)
    with pytest.raises(OrchestratorError, match="unknown layer 'layer9.conv'"):
        quantize_(copy.deepcopy(model), {"layer_bits": {"layer9.conv": 4}})
    with pytest.raises(OrchestratorError, match="needs training data"):
        quantize_(copy.deepcopy(model), {"method": "qat"})
    with pytest.raises(bad_config(), match="Extra inputs"):
        QuantConfig(bitz=4)


def test_export_carries_activation_quantization_and_reproduces_outputs(tmp_path):
    from orchestrator.footprint.export import export, load_export
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    quantize_(model, {"bits": 4, "act_bits": 6, "calibration_images": 16}, toy_data())
    info = export(model, tmp_path / "m.orcx", dataset="cifar10", normalization=NORM)
    assert info["payload_bytes"] == info["accounted_bytes"] == measure(model).param_bits / 8
    loaded, header = load_export(tmp_path / "m.orcx")
    assert loaded.act_bits == 6 and len(header["activations"]) == 7
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_group_activation_bits_quantize_each_group_and_survive_checkpoint_and_export(tmp_path):
    from orchestrator.footprint.export import export, load_export
    from orchestrator.pipeline import realized
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    quantize_(model, {"bits": 4, "act_bits": 8, "group_act_bits": {"stage1": 4}, "calibration_images": 16},
              toy_data())
    assert model.layer1[0].conv2.act_quant.bits == 4 and model.layer2[0].conv1.act_quant.bits == 8
    assert model.act_bits == 8 and realized(model)["act_bits"] == {"stage1": 4, "stage2": 8, "stage3": 8,
                                                                   "classifier": 8}
    fp, uniform = measure(model), measure(model, act_bits=8)
    assert fp.activation_peak_bits < uniform.activation_peak_bits
    x = torch.randn(2, 3, 32, 32)
    save_checkpoint(tmp_path / "q.pt", from_model(model, "cifar10", NORM))
    loaded, _ = load_model(tmp_path / "q.pt")
    export(model, tmp_path / "m.orcx", dataset="cifar10", normalization=NORM)
    exported, _ = load_export(tmp_path / "m.orcx")
    for other in (loaded, exported):
        assert other.act_bits == 8 and measure(other).activation_peak_bits == fp.activation_peak_bits
        with torch.no_grad():
            assert torch.equal(other(x), model(x))
    with pytest.raises(OrchestratorError, match="group_act_bits names group 'stage7'"):
        quantize_(copy.deepcopy(model), {"act_bits": 8, "group_act_bits": {"stage7": 4}}, toy_data())
    with pytest.raises(OrchestratorError, match="group_act_bits needs act_bits"):
        quantize_(build_model("resnet8"), {"group_act_bits": {"stage1": 4}}, toy_data())
    with pytest.raises(bad_config(), match="group_act_bits.stage1"):
        QuantConfig(act_bits=8, group_act_bits={"stage1": 1})


def test_least_squares_clipping_picks_the_hand_computed_scale_and_never_loses_to_max_scaling():
    from orchestrator.qformat import quantize_tensor
    # 2 bits (codes -1, 0, 1): max scaling (s = 10) rounds the six 3s to 0, error 6 x 9 = 54; the error
    # 6 (s - 3)^2 + (10 - s)^2 is least at s = 4 (42), a candidate range (0.4 x max)
    w = torch.tensor([[3.0] * 6 + [10.0]])
    codes, scale, deq = quantize_tensor(w, 2, clip=True)
    assert scale.item() == pytest.approx(4.0) and codes.tolist() == [[1] * 7]
    assert ((deq - w) ** 2).sum().item() == pytest.approx(42.0)
    assert ((quantize_tensor(w, 2)[2] - w) ** 2).sum().item() == pytest.approx(54.0)
    torch.manual_seed(0)
    w = torch.randn(8, 16, 3, 3) * (torch.rand(8, 16, 3, 3) > 0.7)  # pruned: zeros must stay zeros
    for bits in (2, 3, 4, 8):
        err = {clip: ((quantize_tensor(w, bits, clip)[2] - w) ** 2).flatten(1).sum(1) for clip in (False, True)}
        assert (err[True] <= err[False] + 1e-6).all()  # max |w| is one of the candidates, per channel
        assert (quantize_tensor(w, bits, True)[2][w == 0] == 0).all()


def test_clipped_weights_survive_qat_checkpoint_and_export_exactly(tmp_path):
    from orchestrator.footprint.export import export, load_export
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    quantize_(model, {"method": "qat", "bits": 2, "weight_scale": "mse", "finetune": {"epochs": 1, "batch_size": 8}},
              toy_data())
    conv = model.layer1[0].conv1
    assert conv.weight_bits == 2 and conv.weight.unique().numel() <= 3 * conv.weight.shape[0]
    export(model, tmp_path / "m.orcx", dataset="cifar10", normalization=NORM)
    loaded, _ = load_export(tmp_path / "m.orcx")
    for name, m in loaded.named_modules():  # the weights exactly (BN is stored folded: equal up to rounding)
        if hasattr(m, "weight_format"):
            assert torch.equal(m.weight, model.get_submodule(name).weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_activation_clipping_picks_the_hand_computed_range_and_beats_the_max_range():
    from orchestrator.qformat import mse_range
    # 4 bits unsigned (15 levels), 999 ones and one 30: range r costs 999 (1 - q(1))^2 + (30 - r)^2. The max range
    # (step 2) rounds every 1 to 0 (999); r = 15 is exact on the ones (225); r = 17: 17.8 + 169 = 186.8;
    # r = 18 (0.6 x max, step 1.2): 999 x 0.04 + 144 = 184.0, the least; r = 19: 71.0 + 121 = 192.0
    x = torch.cat([torch.ones(999), torch.tensor([30.0])]).view(1, 1, 10, 100)
    assert mse_range(x, torch.tensor(30.0), 4, signed=False).item() == pytest.approx(18.0)
    clipped, plain = ActQuant(4, clip=True).train(), ActQuant(4).train()
    err = {}
    for name, act in (("clipped", clipped), ("max", plain)):
        err[name] = ((act(x) - x) ** 2).sum().item()
    assert clipped.max.item() == pytest.approx(18.0) and plain.max.item() == 30.0
    assert err["clipped"] == pytest.approx(183.96, abs=0.01) and err["max"] == pytest.approx(999.0)
    u = torch.rand(4, 8, 16, 16) * 2 - 1  # no outliers (signed, uniform): the range stays close to max |x|
    assert mse_range(u, u.abs().max(), 4, signed=True) >= 0.9 * u.abs().max()


def test_act_scale_mse_reaches_every_activation_quantizer_and_only_narrows_ranges():
    from orchestrator.quant import calibrate_
    torch.manual_seed(0)
    model = with_bn_stats(build_model("resnet8", width_mult=0.5))
    data = toy_data()
    quantize_(model, {"bits": 8, "act_bits": 4, "act_scale": "mse", "calibration_images": 16}, data)
    quants = [m for m in model.modules() if isinstance(m, ActQuant)]
    assert quants and all(q.clip for q in quants)
    seen = {id(q): [] for q in quants}  # each batch's max |x| at each quantizer, in the same run
    for q in quants:
        q.max.zero_()
        q.register_forward_pre_hook(lambda m, args: seen[id(m)].append(args[0].abs().max().item()))
    calibrate_(model, data, 48)  # batches of 256: one batch of 48 images, so the range is that batch's
    for q in quants:
        assert len(seen[id(q)]) == 1 and 0 < q.max.item() <= seen[id(q)][0] * (1 + 1e-6)
    assert any(q.max.item() < 0.9 * seen[id(q)][0] for q in quants)
    assert QuantConfig(act_bits=4).act_scale == "max"  # the default keeps the running max
    with pytest.raises(bad_config(), match="act_scale"):
        QuantConfig(act_bits=4, act_scale="entropy")
