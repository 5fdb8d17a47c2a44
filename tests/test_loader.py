import pytest
import torch

from orchestrator.data import Split
from orchestrator.loader import Augment, DeviceLoader, cutout, normalize, random_crop, random_flip

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def _split(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return Split("toy", images, torch.arange(n) % 10, [str(i) for i in range(10)])


def test_crop_is_a_window_of_the_zero_padded_image():
    x = _split(8).images
    out = random_crop(x, 4, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4,) * 4)
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert hits, f"image {i} is not a crop"
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_flip_gives_original_or_mirror_and_both_occur():
    x = _split(64).images
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 0 < sum(mirrored) < 64


def test_cutout_zeroes_at_most_a_square():
    x = torch.ones(20, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert (zeros <= 64).all() and (zeros > 0).all()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # same square on every channel


def test_normalize_range():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    y = normalize(x, MEAN, STD)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-0.5 / 0.25, -0.4 / 0.2, -0.3 / 0.1]))
    assert torch.allclose(y[0, :, 0, 1], torch.tensor([0.5 / 0.25, 0.6 / 0.2, 0.7 / 0.1]))


def test_train_epoch_keeps_every_label_once_and_pixels_in_range():
    s = _split(50)
    loader = DeviceLoader(s, 8, MEAN, STD, train=True, augment=Augment(cutout=8), drop_last=False)
    xs, ys = zip(*loader)
    assert len(xs) == len(loader) == 7 and xs[0].shape == (8, 3, 32, 32) and xs[-1].shape[0] == 2
    assert sorted(torch.cat(ys).tolist()) == sorted(s.labels.tolist())
    x = torch.cat(xs)
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()


def test_augmentation_keeps_image_label_pairs():
    # every image is one flat colour that encodes its label: crops, flips and cutout keep the colour
    labels = torch.arange(40) % 10
    images = (labels * 20 + 30).to(torch.uint8).view(-1, 1, 1, 1).expand(40, 3, 32, 32).contiguous()
    s = Split("flat", images, labels, [str(i) for i in range(10)])
    loader = DeviceLoader(s, 16, (0, 0, 0), (1 / 255,) * 3, train=True, augment=Augment(cutout=8))
    for x, y in loader:
        colour = x.amax((1, 2, 3))  # padding and cutout only add zeros
        assert torch.equal(colour, (y * 20 + 30).float())


def test_deterministic_under_seed_and_epoch():
    s = _split(40)
    a = DeviceLoader(s, 10, MEAN, STD, train=True, seed=3)
    b = DeviceLoader(s, 10, MEAN, STD, train=True, seed=3)
    for (xa, ya), (xb, yb) in zip(a.epoch_batches(2), b.epoch_batches(2)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = torch.cat([y for _, y in a.epoch_batches(0)])
    second = torch.cat([y for _, y in a.epoch_batches(1)])
    other_seed = torch.cat([y for _, y in DeviceLoader(s, 10, MEAN, STD, train=True, seed=4).epoch_batches(0)])
    assert not torch.equal(first, second) and not torch.equal(first, other_seed)


def test_eval_loader_is_ordered_and_unaugmented():
    s = _split(25)
    loader = DeviceLoader(s, 10, MEAN, STD, train=False)
    xs, ys = zip(*loader)
    assert len(loader) == 3
    assert torch.equal(torch.cat(ys), s.labels)
    assert torch.equal(torch.cat(xs), normalize(s.images, MEAN, STD))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size=0"):
        DeviceLoader(_split(4), 0, MEAN, STD)
