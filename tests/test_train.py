import copy
import math

import pytest
import torch

from conftest import bad_config
from orchestrator.data import Split
from orchestrator.errors import OrchestratorError
from orchestrator.models import build_model
from orchestrator.train import TrainConfig, TrainingDiverged, evaluate, lr_at, param_groups, train

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def colour_split(n=64, seed=0):
    """Two classes that differ by colour: a tiny net learns them in an epoch or two."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels.view(-1, 1, 1, 1) == 1, torch.tensor([200, 40, 40]).view(1, 3, 1, 1),
                       torch.tensor([40, 40, 200]).view(1, 3, 1, 1))
    noise = torch.randint(-30, 30, (n, 3, 32, 32), generator=g)
    return Split("colour", (base + noise).clamp(0, 255).to(torch.uint8), labels, ["blue", "red"])


def tiny():
    return build_model("resnet8", 2, width_mult=0.25)


def test_schedules():
    cfg = TrainConfig(lr=0.2, warmup=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert max(lrs) == pytest.approx(0.2) and lrs.index(max(lrs)) == 9 and lrs[-1] < 0.01
    cos = [lr_at(s, 100, TrainConfig(lr=1, warmup=0, schedule="cosine")) for s in range(100)]
    assert cos[0] == 1 and cos[50] == pytest.approx(0.5) and all(a >= b for a, b in zip(cos, cos[1:]))


def test_no_weight_decay_on_bn_and_bias():
    model = tiny()
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert len(no_decay["params"]) == sum(1 for n, _ in model.named_parameters() if n.endswith(("bias",)) or "bn" in n)
    assert no_decay["weight_decay"] == 0


def test_training_learns_and_reports_each_epoch():
    data = colour_split()
    torch.manual_seed(0)
    model = tiny()
    before = evaluate(model, data, NORM)["acc"]
    history = train(model, data, TrainConfig(epochs=3, batch_size=16, lr=0.05), NORM, eval_split=data,
                    progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"train_loss", "train_acc", "eval_acc", "images_per_s", "lr"} <= history[0].keys()
    assert history[-1]["eval_acc"] == 1.0 > before
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_same_seed_same_weights():
    data = colour_split()
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, seed=7)
    a, b = tiny(), tiny()
    b.load_state_dict(a.state_dict())
    train(a, data, cfg, NORM, progress=False)
    train(b, data, cfg, NORM, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    data = colour_split()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    init = tiny()
    full = copy.deepcopy(init)
    train(full, data, cfg, NORM, progress=False)

    calls = {"n": 0}

    def dies_in_epoch_3(logits, y, x):
        calls["n"] += 1
        if calls["n"] > 2 * (64 // 16):
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y)

    interrupted = copy.deepcopy(init)
    state = tmp_path / "run.state"
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, data, cfg, NORM, progress=False, state_path=state, loss_fn=dies_in_epoch_3)
    resumed = copy.deepcopy(init)
    history = train(resumed, data, cfg, NORM, progress=False, state_path=state)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for x, y in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(OrchestratorError, match="different training config"):
        train(tiny(), data, cfg.model_copy(update={"lr": 0.01}), NORM, progress=False, state_path=state)


def test_divergence_is_reported():
    with pytest.raises(TrainingDiverged, match="became nan in epoch 1"):
        train(tiny(), colour_split(), TrainConfig(epochs=1, batch_size=16), NORM, progress=False,
              loss_fn=lambda logits, y, x: logits.sum() * math.nan)


def test_config_is_strict():
    with pytest.raises(bad_config(), match="extra"):
        TrainConfig(epoch=3)
    with pytest.raises(bad_config(), match="label_smoothing"):
        TrainConfig(label_smoothing=1.5)


def test_batch_larger_than_data():
    with pytest.raises(OrchestratorError, match="batch_size=128 exceeds the 64"):
        train(tiny(), colour_split(), TrainConfig(epochs=1), NORM, progress=False)


def test_progress_shows_a_live_bar_on_a_terminal_and_one_line_per_epoch_anywhere():
    import io

    from orchestrator.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    row = {"epoch": 1, "train_loss": 1.5, "train_acc": 0.25, "eval_acc": 0.5, "seconds": 3.0, "images_per_s": 1234.0}
    for stream, live in ((Terminal(), True), (io.StringIO(), False)):
        bar = Progress(2, 10, stream=stream)
        for step in range(1, 11):
            bar.update(0, step, 1.5, 1234.0)
        bar.epoch_done(row)
        out = stream.getvalue()
        assert out.rstrip().endswith("epoch 1/2 loss 1.500 train 25.00% eval 50.00% 3s 1,234 img/s")
        assert ("epoch 1/2:" in out and "/10 [" in out) == live  # tqdm's bar, only on a terminal
    quiet = io.StringIO()
    Progress(2, 10, enabled=False, stream=quiet).epoch_done(row)
    assert quiet.getvalue() == ""
