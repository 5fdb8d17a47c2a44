"""Contracts every registered pruning method keeps on every small architecture of the zoo (timm-style
registry tests): the ratio is honoured, no mask survives `finalize_`, the checkpoint and the export
round-trip to the same outputs, and the footprint never grows. Plus `--help` of every CLI command."""

import copy

import click
import pytest
import torch
from torch import nn

from conftest import run, toy_data, with_bn_stats
from orchestrator.checkpoint import from_model, load_model, save_checkpoint
from orchestrator.cli import main
from orchestrator.errors import OrchestratorError
from orchestrator.footprint import measure
from orchestrator.footprint.export import export, load_export
from orchestrator.models import build_model, family_of
from orchestrator.pruning import METHODS, finalize_, prune_, sparsity

ARCHS = {"resnet8": dict(width_mult=0.5), "resnet8b": dict(width_mult=0.5), "vgg11": dict(width_mult=0.125),
         "mobilenetv2": dict(width_mult=0.25)}
NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}
RATIO = 0.5
FT = {"epochs": 1, "batch_size": 16}
CONFIG = {"han": {"rounds": 2, "finetune": FT}, "lottery": {"rounds": 2, "finetune": FT},
          "slimming": {"sparsify": FT}, "thinet": {"images": 16, "locations": 2}}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_its_contract_on_every_small_arch(method, arch, tmp_path):
    cls, _ = METHODS[method]
    torch.manual_seed(0)
    model = with_bn_stats(build_model(arch, **ARCHS[arch]))
    before = measure(model)
    config = {"method": method, "ratio": RATIO, **CONFIG.get(method, {})}
    if cls.supports(model):  # a family the method declares it does not prune: refused in one line, untouched
        state = copy.deepcopy(model.state_dict())
        with pytest.raises(OrchestratorError, match=rf"method {method!r} does not prune {family_of(arch)} models"):
            prune_(model, config, toy_data(tmp_path / "work"))
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        return
    pruned = finalize_(prune_(copy.deepcopy(model), config, toy_data(tmp_path / "work")))
    state = pruned.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)  # masks made permanent
    after = measure(pruned)
    if cls.structured:  # a smaller dense model: fewer parameters, a new width spec
        assert after.params < before.params and pruned.widths != model.widths
    else:  # the global ratio of prunable weights, within rounding
        assert sparsity(pruned)["total"] == pytest.approx(RATIO if method not in CONFIG else config.get("ratio"),
                                                          abs=0.02)
    assert after.param_bits <= before.param_bits and after.macs <= before.macs
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = pruned.eval()(x)
    path = save_checkpoint(tmp_path / "p.pt", from_model(pruned, "cifar10", NORM))
    reloaded, _ = load_model(path)
    export(pruned, tmp_path / "p.orcx", normalization=NORM)
    exported, _ = load_export(tmp_path / "p.orcx")
    with torch.no_grad():
        assert torch.equal(reloaded(x), want)
        assert torch.allclose(exported(x), want, atol=1e-4, rtol=1e-4)  # BN folded: rounding only
    assert measure(exported).param_bits == after.param_bits


def _commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("command", [" ".join(c) for c in _commands(main)])
def test_every_command_has_help(command):
    r = run(*command.split(), "--help")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Usage: ") and command.split()[-1] in r.output.splitlines()[0]
    assert len(r.output.splitlines()) > 3  # a description and options, not only the usage line


def test_an_unknown_command_is_one_line():
    r = run("pruen")
    assert r.exit_code == 2 and "No such command 'pruen'" in r.output and "Traceback" not in r.output


def test_a_layer_of_an_unknown_kind_is_never_accounted_as_free():
    """The footprint counts every parameter, also in a module the accounting has no rule for."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4))
    fp = measure(model)
    assert fp.params == sum(p.numel() for p in model.parameters())


def test_persistence_reads_the_representation_without_the_quantizer_training_code():
    """Checkpoints, footprint and export import `qformat`, never `quant/` (PTQ/QAT) or the pruning code."""
    import subprocess
    import sys
    code = ("import sys, orchestrator.checkpoint, orchestrator.footprint, orchestrator.footprint.export; "
            "print(sorted(m for m in sys.modules if m.startswith(('orchestrator.quant', 'orchestrator.pruning', "
            "'orchestrator.study'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_weight_precision_has_one_format_and_every_format_round_trips_its_stream():
    """qformat's registry is the one list of weight formats: their precisions partition `WeightBits` (each
    precision one format; only bf16, read-only since precision had one encoding, has none), `quantize --bits`
    takes exactly those, and every format, bf16 included, round-trips its export stream bit for bit."""
    import torch

    from conftest import run
    from orchestrator.qformat import STORED, WEIGHT_BITS, WEIGHT_FORMATS, format_of

    precisions = [b for f in STORED.values() for b in f.precisions]
    assert sorted(precisions) == sorted(WEIGHT_BITS) and len(set(precisions)) == len(precisions)
    assert {format_of(b).name for b in WEIGHT_BITS} == {f.name for f in STORED.values() if f.precisions}
    assert [f.name for f in STORED.values() if not f.precisions] == ["bf16"]
    for bits in (*WEIGHT_BITS, 0, 9, 12):
        out = run("quantize", "nowhere.pt", "--bits", bits).output
        assert ("is not allowed" in out) == (bits not in WEIGHT_BITS), out
    g = torch.Generator().manual_seed(0)
    for fmt in STORED.values():
        bits = fmt.precisions[len(fmt.precisions) // 2] if fmt.precisions else fmt.width(0)  # 5 for int, 16 bf16
        w = torch.randn(3, 7, generator=g)
        w[0, :3] = 0  # pruned weights: code 0 (binary stores their sign bit, the mask or index restores the zero)
        values = fmt.round(w, bits)[0].reshape(-1) if fmt.scaled else fmt.round(w, bits)[2].reshape(-1)
        if fmt.name == "binary":
            values = torch.where(values == 0, -1.0, values)
        data = fmt.encode(values, bits)
        assert len(data) == fmt.nbytes(bits, values.numel())
        assert torch.equal(fmt.decode(data, values.numel(), bits).to(values.dtype), values), fmt.name
    assert set(WEIGHT_FORMATS) <= {f.name for f in STORED.values()}
