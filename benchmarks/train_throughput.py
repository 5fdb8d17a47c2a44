"""Training-step throughput: on-device loader vs bare step vs a torchvision DataLoader pipeline.

Three pipelines train the same model on the same images, measured side by side in interleaved
rounds (these machines are noisy, so only ratios taken in one run are reported):
  bare      forward+backward+step on batches prepared beforehand (the ceiling)
  device    orchestrator's DeviceLoader: uint8 on the device, batched crop/flip/normalize per step
  dataloader torchvision Dataset + transforms (PIL RandomCrop, RandomHorizontalFlip, ToTensor,
            Normalize) through torch.utils.data.DataLoader with --workers processes

    python benchmarks/train_throughput.py --data-dir ../shared/data/cifar10-jpeg75
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import torch
import torch.nn.functional as F

from orchestrator.data import Split, load_split
from orchestrator.loader import DeviceLoader
from orchestrator.models import build_model

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def step_fn(model, optimizer):
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def torchvision_loader(split: Split, batch_size: int, workers: int):
    import torchvision.transforms as T
    from PIL import Image

    class CifarPIL(torch.utils.data.Dataset):
        def __init__(self, images, labels, transform):
            self.images = images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision's CIFAR10 holds it
            self.labels, self.transform = labels.tolist(), transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), self.labels[i]

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    return torch.utils.data.DataLoader(CifarPIL(split.images, split.labels, transform), batch_size=batch_size,
                                       shuffle=True, num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)


def timed(batches, step, steps: int, device) -> float:
    """Images per second over `steps` steps drawn from the iterator `batches`."""
    n = 0
    t0 = time.perf_counter()
    for x, y in itertools.islice(batches, steps):
        step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder; synthetic images when omitted")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per pipeline per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    if args.data_dir:
        split = load_split("cifar10", "train", args.data_dir, download=False)
    else:
        g = torch.Generator().manual_seed(0)
        split = Split("synthetic", torch.randint(0, 256, (10_000, 3, 32, 32), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (10_000,), generator=g), [str(i) for i in range(10)])
    model = build_model(args.arch).to(device)
    step = step_fn(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True))

    device_loader = DeviceLoader(split, args.batch_size, MEAN, STD, device, train=True)
    prepared = list(itertools.islice(DeviceLoader(split, args.batch_size, MEAN, STD, device, train=True),
                                     args.steps))
    tv_iter = itertools.cycle(torchvision_loader(split, args.batch_size, args.workers))

    def device_batches():
        for epoch in itertools.count():
            yield from device_loader.epoch_batches(epoch)

    dev_iter = device_batches()
    pipelines = {"bare": lambda: timed(iter(prepared), step, args.steps, device),
                 "device": lambda: timed(dev_iter, step, args.steps, device),
                 "dataloader": lambda: timed(tv_iter, step, args.steps, device)}
    loader_only = {"device": lambda: timed(dev_iter, lambda x, y: None, args.steps * 5, device),
                   "dataloader": lambda: timed(tv_iter, lambda x, y: None, args.steps * 5, device)}
    for fn in list(pipelines.values()) + list(loader_only.values()):
        fn()  # warm-up: worker start, allocator, first-call overheads
    rates = {k: [] for k in pipelines}
    load_rates = {k: [] for k in loader_only}
    for _ in range(args.rounds):
        for k, fn in pipelines.items():
            rates[k].append(fn())
        for k, fn in loader_only.items():
            load_rates[k].append(fn())
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    lmed = {k: sorted(v)[len(v) // 2] for k, v in load_rates.items()}
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"{args.arch}, batch {args.batch_size}, {split.name}, {where}, torch {torch.__version__}")
    print(f"median of {args.rounds} interleaved rounds of {args.steps} steps (images/s):")
    for k, v in med.items():
        print(f"  train step, {k:<10} {v:10,.0f}")
    for k, v in lmed.items():
        print(f"  loader only, {k:<10} {v:10,.0f}")
    print(f"ratio device/bare        {med['device'] / med['bare']:.3f}  (target >= 0.9)")
    print(f"ratio device/dataloader  {med['device'] / med['dataloader']:.3f}  (train step)")
    print(f"ratio device/dataloader  {lmed['device'] / lmed['dataloader']:.3f}  (loader only, {args.workers} workers)")


if __name__ == "__main__":
    main()
