"""Training and evaluation: SGD + Nesterov, one-cycle or cosine, label smoothing, bf16 on CUDA.

The learning rate is a pure function of the step, so a run resumed from its state file (saved
atomically after every epoch) continues exactly where it stopped. `loss_fn` is a hook for
fine-tunes that need another loss (distillation).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .data import Split
from .errors import OrchestratorError
from .values import Epochs
from .loader import Augment, DeviceLoader, first_batches
from .paths import write_atomic
from .progress import Progress


class TrainingDiverged(OrchestratorError):
    """The loss became NaN or infinite."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: Epochs = 30  # passes over the training split; a fraction (0.25) trains that share
    # of one epoch's steps, the cheap recovery a study can afford on a CPU
    batch_size: int = Field(128, ge=1)  # images per optimizer step
    lr: float = Field(0.1, gt=0, le=10)  # peak learning rate
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, lt=1)  # L2 factor on conv/linear weights; none on BN and biases
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.15, ge=0, lt=1)  # fraction of all steps spent ramping the lr up linearly
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    crop_padding: int = Field(4, ge=0, le=16)  # pixels; 0 disables random crops
    flip: bool = True  # random horizontal flips
    cutout: int = Field(0, ge=0, le=32)  # side of the cutout square in pixels; 0 disables
    seed: int = Field(0, ge=0)
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on (CUDA and CPU: 1.06-1.19x training,
    # 1.4x inference for ResNet-20 on 2 cores, benchmarks/finetune_speed.py)
    compile: bool = False  # torch.compile the model (worth it on GPU for long runs)
    eval_batch_size: int = Field(250, ge=1)  # images per forward pass; 250 ran 1.9x faster than 1000 on 2 CPU cores


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) of `total`."""
    warm = int(config.warmup * total)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "constant":
        return config.lr
    frac = (step - warm) / max(1, total - warm)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * frac))
    return config.lr * (1 - frac)


def total_steps(epochs: int | float, steps_per_epoch: int) -> int:
    """Optimizer steps of `epochs` passes (at least one step for any positive fraction)."""
    return max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only tensors of rank >= 2 (conv and linear weights): BN and biases are exempt."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _amp_dtype(config: TrainConfig, device: torch.device):
    return torch.bfloat16 if config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda") else None


def _channels_last(config: TrainConfig, device: torch.device) -> bool:
    return config.channels_last == "on" or (config.channels_last == "auto" and device.type in ("cuda", "cpu"))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalization: dict, device="cpu", batch_size: int = 250,
             amp: str = "auto") -> dict:
    """Top-1 accuracy (fraction) and mean cross-entropy of `model` on `split`."""
    device = torch.device(device)
    cfg = TrainConfig(amp=amp)
    cl = _channels_last(cfg, device)
    loader = DeviceLoader(split, batch_size, normalization["mean"], normalization["std"], device,
                          train=False, channels_last=cl)
    was_training = model.training
    model.eval()
    if cl:
        model.to(memory_format=torch.channels_last)
    correct, loss_sum = 0, 0.0
    dtype = _amp_dtype(cfg, device)
    for x, y in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    if cl:
        model.to(memory_format=torch.contiguous_format)
    model.train(was_training)
    n = max(1, len(split))
    return {"loss": loss_sum / n, "acc": correct / n, "n": len(split)}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split: Split, normalization: dict, images: int, device="cpu",
                   batch_size: int = 250) -> nn.Module:
    """Re-estimate BN running statistics on `images` training images (no weight changes).

    Pruning or quantizing without retraining shifts every layer's activation statistics; the stale
    running means/variances then mis-normalize, and re-estimating them recovers much of the loss.
    The images are augmented as the zoo trains (padded random crops, flips; a fixed seed): the base's
    statistics are those of augmented images, and plain ones cost the unpruned ResNet-20 base 2.2
    points on 1,000 validation images (84.5% -> 82.3%; augmented: 84.5%).
    """
    device = torch.device(device)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or images <= 0:
        return model
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    was_training = model.training
    model.to(device).train()
    for x, _ in first_batches(split, batch_size, normalization, device, images, augmented=True):
        model(x)
    for m, momentum in saved:
        m.momentum = momentum
    return model.train(was_training)


def _save_state(path: Path, model, optimizer, epoch: int, history: list, config: TrainConfig) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "history": history, "config": config.model_dump()}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def _resume(state_path: Path | None, model, optimizer, config, device) -> tuple[int, list[dict]]:
    """(finished epochs, their history) from `state_path`, model and optimizer restored; (0, []) without it."""
    if not (state_path and state_path.is_file()):
        return 0, []
    state = torch.load(state_path, map_location=device, weights_only=True)
    if state["config"] != config.model_dump():
        raise OrchestratorError(f"{state_path} was written by a different training config; "
                                "delete it or use the same config to resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["history"]


def _epoch(step_model, optimizer, loader, epoch: int, total: int, config, loss_fn, dtype, bar) -> dict:
    """One epoch (the last one cut at `total` steps for a fractional epoch count): its metrics row."""
    device = loader.images.device
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for i, (x, y) in enumerate(loader.epoch_batches(epoch)):
        if epoch * len(loader) + i >= total:  # a fractional last epoch ends early
            break
        lr = lr_at(epoch * len(loader) + i, total, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = step_model(x)
            loss = loss_fn(logits, y, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if bar.enabled:
            bar.update(epoch, i + 1, loss.item(), seen / (time.perf_counter() - t0))
    train_loss = loss_sum.item() / seen
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1} "
                               f"(lr={config.lr}); lower the learning rate")
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": correct.item() / seen,
            "seconds": seconds, "images_per_s": seen / seconds}


def train(model: nn.Module, train_split: Split, config: TrainConfig, normalization: dict, *,
          eval_split: Split | None = None, device="cpu", progress: bool = True,
          state_path=None, loss_fn: Callable | None = None) -> list[dict]:
    """Train `model` in place; returns one metrics dict per epoch.

    With `state_path`, the state after each epoch is saved there and a later call with the same
    config resumes from it (finished epochs are kept, not redone).
    """
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model.to(device)
    cl = _channels_last(config, device)
    if cl:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    state_path = Path(state_path) if state_path else None
    start, history = _resume(state_path, model, optimizer, config, device)
    augment = Augment(config.crop_padding, config.flip, config.cutout)
    loader = DeviceLoader(train_split, config.batch_size, normalization["mean"], normalization["std"],
                          device, train=True, augment=augment, seed=config.seed, channels_last=cl)
    if len(loader) == 0:
        raise OrchestratorError(f"batch_size={config.batch_size} exceeds the {len(train_split)} training images")
    step_model = torch.compile(model) if config.compile else model
    loss_fn = loss_fn or (lambda logits, y, x: F.cross_entropy(logits, y, label_smoothing=config.label_smoothing))
    dtype = _amp_dtype(config, device)
    total = total_steps(config.epochs, len(loader))
    epochs = math.ceil(total / len(loader))  # the last one partial for a fraction (never an empty one)
    bar = Progress(epochs, len(loader), enabled=progress)
    for epoch in range(start, epochs):
        model.train()
        row = _epoch(step_model, optimizer, loader, epoch, total, config, loss_fn, dtype, bar)
        if eval_split is not None:
            ev = evaluate(model, eval_split, normalization, device, config.eval_batch_size, config.amp)
            row.update(eval_loss=ev["loss"], eval_acc=ev["acc"])
        history.append(row)
        bar.epoch_done(row)
        if state_path:
            _save_state(state_path, model, optimizer, epoch + 1, history, config)
    if cl:
        model.to(memory_format=torch.contiguous_format)
    return history
