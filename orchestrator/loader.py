"""Batches straight from a uint8 tensor on the training device (airbench style).

Augmentation is a handful of batched tensor ops (random crop with zero padding, horizontal
flip, optional cutout, normalization); no per-image Python or PIL in the training path.
All randomness comes from one CPU generator seeded by (seed, epoch), so an epoch is the same
on any device and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Split


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 4  # pixels of zero padding before the random 32x32 crop; 0 disables
    flip: bool = True  # random horizontal flip with probability 1/2
    cutout: int = 0  # side in pixels of one zeroed square per image (DeVries & Taylor); 0 disables


NO_AUGMENT = Augment(crop_padding=0, flip=False, cutout=0)


def affine(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with normalized = uint8 * scale + shift; mean/std per channel in [0, 1]."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1 / (255 * s), -m / s


def normalize(images: torch.Tensor, mean, std, dtype=torch.float32, coeffs=None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalized float (pass `coeffs` from `affine` to skip rebuilding them)."""
    scale, shift = coeffs or affine(mean, std, images.device)
    return torch.addcmul(shift, images.float(), scale).to(dtype)


def random_crop(images: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random window of the original size from each image."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=images.device))  # (n, w)
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image, centred anywhere (it may overhang the border)."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=gen).to(images.device)
    cx = torch.randint(0, w, (n,), generator=gen).to(images.device)
    y0, x0 = cy - size // 2, cx - size // 2  # top-left corner of each square
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + size)
    in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + size)
    mask = in_y[:, :, None] & in_x[:, None, :]
    return images.masked_fill(mask[:, None], 0)


class DeviceLoader:
    """Iterates (inputs, labels) batches of a split that lives on `device` as uint8.

    `train=True` shuffles with randperm and augments; pass the epoch to `epoch_batches` to get a
    different, reproducible order each epoch.
    """

    def __init__(self, split: Split, batch_size: int, mean, std, device="cpu", train: bool = False,
                 augment: Augment = Augment(), seed: int = 0, drop_last: bool | None = None,
                 dtype=torch.float32, channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.train, self.augment, self.seed = train, augment if train else NO_AUGMENT, seed
        self.drop_last = train if drop_last is None else drop_last
        self.dtype, self.channels_last = dtype, channels_last
        self._coeffs = affine(mean, std, self.images.device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return self.epoch_batches(0)

    def epoch_batches(self, epoch: int):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen).to(self.images.device) if self.train else None
        for b in range(len(self)):
            idx = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is not None:
                sel = order[idx]
                x, y = self.images.index_select(0, sel), self.labels.index_select(0, sel)
            else:
                x, y = self.images[idx], self.labels[idx]
            yield self.prepare(x, gen), y

    def prepare(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        aug = self.augment
        if aug.crop_padding:
            x = random_crop(x, aug.crop_padding, gen)
        if aug.flip:
            x = random_flip(x, gen)
        x = normalize(x, self.mean, self.std, self.dtype, self._coeffs)
        if aug.cutout:
            x = cutout(x, aug.cutout, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def first_batches(split: Split, batch_size: int, normalization: dict, device, images: int, augmented: bool = False):
    """Batches of `split` until `images` images have gone by (calibration): in order and plain, or `augmented`,
    shuffled and augmented as training is (a fixed seed)."""
    loader = DeviceLoader(split, min(batch_size, len(split)), normalization["mean"], normalization["std"], device,
                          train=augmented, drop_last=False)
    seen = 0
    for x, y in loader:
        yield x, y
        seen += len(x)
        if seen >= images:
            return
