import pytest
import torch
from torch import nn

from orchestrator.data import Split
from orchestrator.errors import OrchestratorError
from orchestrator.models import build_model
from orchestrator.pruning.core import (apply_masks_, finalize_, magnitude, prunable_layers, random_scores,
                                       schedule, select_global, select_per_layer, sparsity)
from orchestrator.train import TrainConfig, train


def _pruned(ratio=0.8, arch="resnet8"):
    torch.manual_seed(0)
    model = build_model(arch)
    layers = prunable_layers(model)
    masks = select_global(magnitude(layers), ratio)
    apply_masks_(layers, masks)
    return model, layers, masks


def test_global_selection_hits_the_target_exactly_and_removes_the_smallest():
    model, layers, masks = _pruned(0.8)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros == round(0.8 * total)
    kept_min = min(m.weight_orig[mask].abs().min() for m, mask in zip(layers.values(), masks.values()))
    cut_max = max(m.weight_orig[~mask].abs().max() for m, mask in zip(layers.values(), masks.values()))
    assert cut_max <= kept_min


def test_masks_zero_the_weights_and_retraining_keeps_them_zero():
    model, layers, masks = _pruned(0.7)
    for n, m in layers.items():
        assert not m.weight[~masks[n]].any()
    g = torch.Generator().manual_seed(0)
    data = Split("toy", torch.randint(0, 256, (32, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.arange(32) % 10, [str(i) for i in range(10)])
    train(model, data, TrainConfig(epochs=1, batch_size=16, lr=0.1), {"mean": [0.5] * 3, "std": [0.25] * 3},
          progress=False)
    for n, m in layers.items():
        assert not m.weight[~masks[n]].any()
        assert m.weight_orig.grad is None or not m.weight_orig.grad[~masks[n]].any()


def test_finalize_leaves_plain_weights():
    model, layers, masks = _pruned(0.5)
    before = {n: m.weight.detach().clone() for n, m in layers.items()}
    finalize_(model)
    keys = model.state_dict().keys()
    assert not [k for k in keys if k.endswith(("_orig", "_mask"))]
    for n, m in layers.items():
        assert torch.equal(m.weight, before[n]) and isinstance(m.weight, nn.Parameter)
    assert sparsity(model)["total"] == pytest.approx(0.5, abs=1e-4)


def test_per_layer_and_min_keep():
    model = build_model("resnet8")
    layers = prunable_layers(model)
    masks = select_per_layer(magnitude(layers), 0.9)
    for n, m in layers.items():
        assert int(masks[n].sum()) == max(1, m.weight.numel() - round(0.9 * m.weight.numel()))
    # a global cut so deep that a layer would vanish still keeps min_keep weights in every layer
    deep = select_global(magnitude(layers), 0.9999, min_keep=3)
    assert all(int(mask.sum()) >= 3 for mask in deep.values())


def test_random_is_a_different_selection_with_the_same_count():
    model = build_model("resnet8")
    layers = prunable_layers(model)
    a, b = select_global(magnitude(layers), 0.5), select_global(random_scores(layers, 1), 0.5)
    assert sum(int(m.sum()) for m in a.values()) == sum(int(m.sum()) for m in b.values())
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_schedules():
    assert schedule(0.9, 1, "one_shot") == [0.9]
    geo = schedule(0.9, 3)
    assert geo[-1] == pytest.approx(0.9) and (1 - geo[0]) ** 3 == pytest.approx(0.1)
    cub = schedule(0.8, 4, "cubic")
    assert cub[-1] == pytest.approx(0.8) and cub[0] > 0.8 / 4  # prunes fastest early
    assert all(x < y for x, y in zip(cub, cub[1:]))


def test_bad_inputs():
    layers = prunable_layers(build_model("resnet8"))
    for bad in (-0.1, 1.0, 1.5, "half"):
        with pytest.raises(OrchestratorError, match=f"ratio={bad!r} is not allowed; allowed: a number in \\[0, 1\\)"):
            select_global(magnitude(layers), bad)
    with pytest.raises(OrchestratorError, match="no prunable"):
        prunable_layers(nn.Sequential(nn.ReLU()))
    with pytest.raises(OrchestratorError, match="unknown schedule 'linear'"):
        schedule(0.5, 2, "linear")
