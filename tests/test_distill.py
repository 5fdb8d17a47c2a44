import pytest
import torch
import torch.nn.functional as F

from conftest import bad_config
from orchestrator.distill import KDConfig, kd_loss, kd_loss_fn
from orchestrator.errors import OrchestratorError
from orchestrator.models import build_model
from orchestrator.pruning import prune_


def test_kd_loss_is_cross_entropy_at_alpha_zero():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))


def test_kd_soft_term_is_minimized_at_the_teachers_logits():
    torch.manual_seed(0)
    t, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    at_teacher = kd_loss(t.clone(), t, y, 4.0, 1.0)
    assert at_teacher.abs() < 1e-6  # KL(p || p) = 0
    for _ in range(5):
        assert kd_loss(t + torch.randn_like(t), t, y, 4.0, 1.0) > at_teacher
    s = torch.zeros(8, 10, requires_grad=True)  # gradient descent on the soft term reaches the teacher's softmax
    opt = torch.optim.SGD([s], lr=5.0)
    for _ in range(300):
        opt.zero_grad()
        kd_loss(s, t, y, 2.0, 1.0).backward()
        opt.step()
    assert torch.allclose(F.softmax(s / 2, 1), F.softmax(t / 2, 1), atol=1e-3)


def test_kd_config_is_strict():
    with pytest.raises(bad_config(), match="temperature"):
        KDConfig(temperature=0)
    with pytest.raises(bad_config(), match="alpha"):
        KDConfig(alpha=1.5)
    with pytest.raises(bad_config(), match="beta"):
        KDConfig(beta=1)


def test_kd_hook_freezes_the_teacher_and_fine_tunes_with_it():
    teacher = build_model("resnet8", width_mult=0.5)
    fn = kd_loss_fn(teacher, KDConfig())
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    student = build_model("resnet8", width_mult=0.25)
    fn(student(x), y, x).backward()
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    from conftest import toy_data
    data = toy_data()
    config = {"method": "l1_filter", "ratio": 0.5, "finetune": {"epochs": 1, "batch_size": 16, "kd": {"alpha": 0.5}}}
    with pytest.raises(OrchestratorError, match="no teacher"):
        prune_(build_model("resnet8", width_mult=0.5), config, data)
    data.teacher = teacher
    small = prune_(build_model("resnet8", width_mult=0.5), config, data)
    assert small.widths["blocks"] == [[4], [8], [16]] and data.log[-1]["step"] == "finetune"


def test_cached_teacher_logits_give_the_same_fine_tune_bit_for_bit():
    # a seeded loader feeds every fine-tune the same augmented batches: the second fine-tune (a later step
    # or trial) asks the teacher nothing new, and its student ends exactly where an uncached one does
    import copy

    from conftest import TOY_NORM, toy_split
    from orchestrator.distill import TeacherCache
    from orchestrator.train import TrainConfig, train

    torch.manual_seed(0)
    teacher, start = build_model("resnet8", width_mult=0.5), build_model("resnet8", width_mult=0.25)
    config = TrainConfig(epochs=1.67, batch_size=16, lr=0.05)  # 48 images: 3 steps per epoch, 5 in all
    cache = TeacherCache()

    def tuned(use_cache):
        student = copy.deepcopy(start)
        train(student, toy_split(48), config, TOY_NORM, progress=False,
              loss_fn=kd_loss_fn(teacher, KDConfig(), cache=cache if use_cache else None))
        return student.state_dict()

    plain = tuned(False)
    assert cache.hits == cache.misses == 0
    first = tuned(True)
    assert (cache.hits, cache.misses) == (0, 5)
    second = tuned(True)
    assert (cache.hits, cache.misses) == (5, 5)
    for k in plain:
        assert torch.equal(plain[k], first[k]) and torch.equal(plain[k], second[k]), k
    # another teacher, or another batch, is a miss; the oldest entries go first when full
    x = torch.randn(4, 3, 32, 32)
    other = build_model("resnet8", width_mult=0.5)
    fn = kd_loss_fn(other, KDConfig(), cache=cache)
    fn(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), x)
    fn(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), x + 1e-3)
    assert (cache.hits, cache.misses) == (5, 7)
    from orchestrator.distill import ENTRY_OVERHEAD

    small = TeacherCache(max_bytes=2 * (4 * 10 * 4 + ENTRY_OVERHEAD))  # two batches of 4 x 10 float32 logits
    for i in range(3):
        small.logits(other, b"t", x + i)
    assert len(small.entries) == 2 and small.bytes == 2 * (160 + ENTRY_OVERHEAD)
    small.logits(other, b"t", x)  # the oldest went first: a miss
    assert small.misses == 4 and small.hits == 0
    assert torch.equal(small.logits(other, b"t", x + 2), other(x + 2)) and small.hits == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # other precision, other logits: a miss
        small.logits(other, b"t", x + 2)
    assert small.hits == 1
