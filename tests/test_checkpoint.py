import pytest
import torch
from torch.nn.utils import prune

from conftest import with_bn_stats
from orchestrator.checkpoint import from_model, load_checkpoint, load_model, save_checkpoint
from orchestrator.errors import CheckpointError
from orchestrator.models import build_model, default_widths

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}



def test_round_trip_gives_identical_outputs(tmp_path):
    widths = default_widths("resnet20")
    widths["blocks"] = [[3, 16, 7], [32, 2, 11], [5, 64, 64]]
    model = with_bn_stats(build_model("resnet20", 100, widths))
    ckpt = from_model(model, "cifar100", NORM, {"lr": 0.1}, {"test_acc": 0.5})
    path = save_checkpoint(tmp_path / "m.pt", ckpt)
    loaded, meta = load_model(path)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert meta.widths == model.widths and meta.dataset == "cifar100" and meta.num_classes == 100
    assert meta.config == {"lr": 0.1} and meta.metrics == {"test_acc": 0.5} and meta.normalization == NORM
    assert not (tmp_path / "m.pt.tmp").exists()


@pytest.mark.parametrize("arch", ["resnet32", "resnet20b"])
def test_public_reference_format_loads_any_depth(tmp_path, arch):
    model = with_bn_stats(build_model(arch))
    state = {f"module.{k}": v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"best_prec1": 91.25, "state_dict": state}, tmp_path / "public.th")
    loaded, meta = load_model(tmp_path / "public.th")
    assert meta.arch == arch and meta.source == "public-resnet" and meta.metrics["best_prec1"] == 91.25
    assert meta.normalization["mean"] == [0.485, 0.456, 0.406]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


def test_public_format_with_pruned_widths(tmp_path):
    widths = default_widths("resnet20")
    widths["blocks"][1] = [4, 5, 6]
    model = with_bn_stats(build_model("resnet20", 10, widths))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "p.th")
    assert load_checkpoint(tmp_path / "p.th").widths["blocks"][1] == [4, 5, 6]


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", from_model(build_model("resnet8"), "cifar10", NORM))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="m.pt is not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt is not a checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither an orchestrator checkpoint nor a public"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a CIFAR ResNet"):
        load_checkpoint(tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_loading_never_unpickles_modules(tmp_path):
    torch.save(build_model("resnet8"), tmp_path / "module.pt")  # a pickled nn.Module
    with pytest.raises(CheckpointError, match="loading never runs code"):
        load_checkpoint(tmp_path / "module.pt")


def test_weights_that_do_not_fit(tmp_path):
    ckpt = from_model(build_model("resnet8"), "cifar10", NORM)
    ckpt.state_dict.pop("linear.weight")
    save_checkpoint(tmp_path / "m.pt", ckpt)
    with pytest.raises(CheckpointError, match="missing \\['linear.weight'\\]"):
        load_model(tmp_path / "m.pt")


def test_masks_are_never_saved():
    model = build_model("resnet8")
    prune.l1_unstructured(model.conv1, "weight", amount=0.5)
    with pytest.raises(CheckpointError, match="pruning masks .*conv1.weight_orig"):
        from_model(model, "cifar10", NORM)
