"""Footprint accounting against numbers computed by hand, and export round trips."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from conftest import with_bn_stats
from orchestrator.checkpoint import from_model, load_model, save_checkpoint
from orchestrator.errors import CheckpointError, OrchestratorError
from orchestrator.footprint import MICRONET_OPS, MICRONET_PARAMS, measure
from orchestrator.footprint.export import export, load_export
from orchestrator.footprint.params import encode_costs, tensor_row
from orchestrator.models import build_model
from orchestrator.qformat import quantize_weight_

MAP = 32 * 32  # pixels of one CIFAR feature map at full resolution


class Toy(nn.Module):
    """conv 3->4 (3x3, no bias) -> BN -> ReLU -> global pool -> linear 4->10."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Residual(nn.Module):
    """Two 1x1 convs 3->3 and a skip: the block input must stay alive until the add."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1, bias=False)
        self.conv2 = nn.Conv2d(3, 3, 1, bias=False)

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + x)


def test_toy_parameters_activations_and_macs_by_hand():
    fp = measure(Toy())
    # 108 conv weights + 8 BN (scale, shift per channel) + 40 linear weights + 10 biases
    assert fp.params == 166 and fp.param_bits == 166 * 32
    # peak while the conv runs: input 3x32x32 + output 4x32x32 (BN and ReLU write in place)
    assert fp.activation_peak_bits == (3 + 4) * MAP * 32 and fp.activation_peak_at == "conv"
    # buffers: input, conv output, pooled 4, logits 10
    assert fp.activation_sum_bits == (3 * MAP + 4 * MAP + 4 + 10) * 32
    assert fp.largest_layer == "conv" and fp.largest_layer_bits == 7 * MAP * 32
    assert fp.macs == MAP * 108 + 40 and fp.macs_sparse == fp.macs
    assert fp.total_bits == fp.param_bits + fp.activation_peak_bits
    ops = 2 * fp.macs  # 32-bit multiply (full op) + add
    assert fp.micronet_score == pytest.approx(166 / MICRONET_PARAMS + ops / MICRONET_OPS)


def test_residual_skip_stays_alive():
    fp = measure(Residual(), batch=2, act_bits=8)
    # conv2 runs while x (skip), conv1's output and conv2's output are all live: 3 maps of 3 channels
    assert fp.activation_peak_bits == 2 * 3 * (3 * MAP) * 8
    assert fp.activation_peak_at == "conv2"
    assert fp.params == 18 and fp.param_bits == 18 * 32


def test_encodings_by_hand():
    t = torch.zeros(100)
    t[[0, 1, 50, 99]] = 1.0
    costs = encode_costs(t, 32)
    assert costs["dense"]["bits"] == 3200
    assert costs["bitmask"]["bits"] == 100 + 4 * 32
    # gaps 0, 0, 48, 48: k=6 needs no filler -> 4 x (32 + 6); k=5 needs two fillers -> 6 x 37 = 222
    assert costs["relative_index"] == {"bits": 152, "index_bits": 6, "fillers": 0}
    row = tensor_row("w", t, 32)
    assert row["encoding"] == "relative_index" and row["storage_bits"] == 152 and row["nonzero"] == 4
    dense = tensor_row("w", torch.ones(10), 8, scales=2)
    assert dense["encoding"] == "dense" and dense["storage_bits"] == 80 + 2 * 32


def test_binary_cannot_store_zeros_densely():
    t = torch.tensor([1.0, -1.0, 0.0, 1.0])
    costs = encode_costs(t, 1)
    assert "dense" not in costs and costs["bitmask"]["bits"] == 4 + 3
    assert "dense" in encode_costs(torch.tensor([1.0, -1.0]), 1)


@pytest.mark.parametrize("arch,params", [("resnet20", 269_722), ("resnet56", 853_018)])
def test_resnet_dense_fp32(arch, params):
    fp = measure(build_model(arch))
    # BN counted as scale + shift (running statistics folded): exactly the published count x 32 bits
    assert fp.param_bits == params * 32 and fp.params == params
    # peak at batch 1: block input kept for the skip + conv1 output + conv2 output, 16 x 32 x 32 each
    assert fp.activation_peak_bits == 3 * 16 * MAP * 32
    assert measure(build_model(arch), batch=4).activation_peak_bits == 4 * 3 * 16 * MAP * 32


def _global_prune(model, amount):
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, prune.L1Unstructured, amount=amount)
    return params


def test_masks_attached_or_removed_give_the_same_footprint():
    torch.manual_seed(0)
    model = build_model("resnet20")
    params = _global_prune(model, 0.7)
    masked = measure(model)
    assert masked.nonzero < 0.35 * masked.params  # effective weights, not weight_orig
    for m, name in params:
        prune.remove(m, name)
    assert measure(model) == masked



def _variant(name):
    torch.manual_seed(0)
    model = with_bn_stats(build_model("resnet20"))
    sparsity, bits = {"fp32": (0, 32), "fp16": (0, 16), "int8": (0, 8), "int4": (0, 4), "binary": (0, 1),
                      "sparse50": (0.5, 32), "sparse90": (0.9, 32), "sparse90-int4": (0.9, 4),
                      "sparse90-binary": (0.9, 1)}[name]
    if sparsity:
        for m, n in _global_prune(model, sparsity):
            prune.remove(m, n)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            quantize_weight_(m, bits)
    return model


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8", "int4", "binary", "sparse50", "sparse90",
                                  "sparse90-int4", "sparse90-binary"])
def test_export_round_trip(tmp_path, name):
    model = _variant(name)
    fp = measure(model)
    info = export(model, tmp_path / "m.orcx")
    assert info["accounted_bytes"] == fp.param_bits / 8
    # each tensor's streams are padded to whole bytes: at most 3 bytes per tensor over the accounting
    assert 0 <= info["payload_bytes"] - info["accounted_bytes"] <= 3 * len(fp.tensors)
    assert info["payload_bytes"] <= 1.01 * info["accounted_bytes"]
    assert info["file_bytes"] == info["payload_bytes"] + info["header_bytes"]
    loaded, header = load_export(tmp_path / "m.orcx")
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert torch.equal(ref.argmax(1), out.argmax(1))
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)  # BN folded: float rounding only
    for (n, a), (_, b) in zip(model.named_modules(), loaded.named_modules()):
        if isinstance(a, (nn.Conv2d, nn.Linear)):
            assert torch.equal(a.weight, b.weight), n  # weights bit-exact
    assert measure(loaded).param_bits == fp.param_bits


def test_a_bf16_layer_written_when_bf16_was_a_weight_format_still_loads_and_exports(tmp_path):
    """bf16 is read only now: a checkpoint or export holding it loads to the same weights and footprint."""
    from orchestrator.qformat import set_weight_spec_
    model = _variant("fp32")
    conv = model.layer1[0].conv1
    conv.weight.data = conv.weight.data.to(torch.bfloat16).float()
    set_weight_spec_(conv, "bf16", 16)
    fp = measure(model)
    save_checkpoint(tmp_path / "b.pt", from_model(model, "cifar10", {"mean": [0] * 3, "std": [1] * 3}))
    export(model, tmp_path / "b.orcx")
    for loaded in (load_model(tmp_path / "b.pt")[0], load_export(tmp_path / "b.orcx")[0]):
        assert loaded.layer1[0].conv1.weight_format == "bf16" and measure(loaded).param_bits == fp.param_bits
        assert torch.equal(loaded.layer1[0].conv1.weight, conv.weight)


def test_quantized_checkpoint_round_trip(tmp_path):
    model = _variant("sparse90-int4")
    save_checkpoint(tmp_path / "q.pt", from_model(model, "cifar10", {"mean": [0] * 3, "std": [1] * 3}))
    loaded, ckpt = load_model(tmp_path / "q.pt")
    assert ckpt.quantization["layer1.0.conv1"] == {"format": "int", "bits": 4}
    assert measure(loaded) == measure(model)


def test_bad_inputs(tmp_path):
    (tmp_path / "x.orcx").write_bytes(b"not an export")
    with pytest.raises(CheckpointError, match="not an orchestrator export"):
        load_export(tmp_path / "x.orcx")
    export(build_model("resnet8"), tmp_path / "t.orcx")
    data = (tmp_path / "t.orcx").read_bytes()
    (tmp_path / "t.orcx").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_export(tmp_path / "t.orcx")
    with pytest.raises(CheckpointError, match="cannot export a Toy"):
        export(Toy(), tmp_path / "toy.orcx")
    conv = nn.Conv2d(3, 3, 3)
    for bits in (0, 12, 33, "eight", "int3"):  # 12: int codes stop at 8, as in every search space
        with pytest.raises(OrchestratorError, match=f"weight bits={bits!r} is not allowed; allowed: 32 \\(fp32\\), "
                                                    r"16 \(fp16\), 2..8 \(int\), 1 \(binary\)"):
            quantize_weight_(conv, bits)
    with pytest.raises(OrchestratorError, match="batch=-1 must be an integer >= 1"):
        measure(Toy(), batch=-1)
    with pytest.raises(OrchestratorError, match="act_bits=0"):
        measure(Toy(), act_bits=0)
    with pytest.raises(OrchestratorError, match="no parameters"):
        measure(nn.ReLU())


def test_mixed_activation_bits_store_each_map_at_its_widest_quantized_reader():
    from orchestrator.qformat import attach_act_quant_
    model = Residual()
    attach_act_quant_(model.conv1, 4)  # x is read by conv1 only (and the add): stored at 4 bits
    attach_act_quant_(model.conv2, 8)  # relu(conv1(x)) is read by conv2: 8 bits
    model.act_bits = 8  # conv2's output, read by no quantized layer: the model's widest
    fp = measure(model)
    assert fp.activation_peak_bits == 3 * MAP * (4 + 8 + 8) and fp.activation_peak_at == "conv2"
    assert fp.activation_sum_bits == 3 * MAP * (4 + 8 + 8)
    model.conv1.act_quant.bits = 8  # one bit-width again: the uniform rule, unchanged
    assert measure(model).activation_peak_bits == 3 * (3 * MAP) * 8


def test_the_file_proves_the_footprint_at_the_sizes_a_front_reaches(tmp_path):
    """ResNet-20 at 94% sparsity with 2-bit weights (~21 KB of parameters): the whole file, header
    included, is within 2% of the accounted parameter bytes, and loads back to the same weights."""
    model = with_bn_stats(build_model("resnet20"))
    for m, n in _global_prune(model, 0.94):
        prune.remove(m, n)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            quantize_weight_(m, 2)
    info = export(model, tmp_path / "m.orcx", normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert info["accounted_bytes"] >= 20_000
    assert info["file_bytes"] <= 1.02 * info["accounted_bytes"], info
    loaded, header = load_export(tmp_path / "m.orcx")
    assert header["version"] == 2 and header["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    for (n, a), (_, b) in zip(model.named_modules(), loaded.named_modules()):
        if isinstance(a, (nn.Conv2d, nn.Linear)):
            assert torch.equal(a.weight, b.weight), n
    assert measure(loaded).param_bits == measure(model).param_bits


def test_a_version_1_export_still_loads(tmp_path):
    """Files written before the compact header (plain JSON, version 1) load to the same model."""
    import json
    import struct
    import zlib
    model = _variant("sparse90-int4")
    export(model, tmp_path / "v2.orcx")
    v2, header = load_export(tmp_path / "v2.orcx")
    data = (tmp_path / "v2.orcx").read_bytes()
    (n,) = struct.unpack("<I", data[5:9])
    old = {k: v for k, v in header.items() if k != "version"}
    if not old.get("activations"):
        old.pop("activations", None)
    raw = json.dumps(old).encode()
    assert json.loads(zlib.decompress(data[9:9 + n]))["arch"] == header["arch"]
    (tmp_path / "v1.orcx").write_bytes(data[:4] + bytes([1]) + struct.pack("<I", len(raw)) + raw + data[9 + n:])
    v1, _ = load_export(tmp_path / "v1.orcx")
    for a, b in zip(v1.state_dict().values(), v2.state_dict().values()):
        assert torch.equal(a, b)
