"""End-to-end jobs shared by the CLI and, later, by study trials: data + model + trainer + checkpoint."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from . import __version__
from .checkpoint import Checkpoint, from_model, load_checkpoint, load_model, save_checkpoint
from .data import get_spec, load_arrays, load_split, split_validation
from .errors import OrchestratorError
from .models import build_model
from .train import TrainConfig, evaluate, train


def environment() -> dict:
    """Versions and hardware, logged with every result."""
    return {"orchestrator": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "threads": torch.get_num_threads()}


def train_model(*, arch: str, dataset: str, data_dir, config: TrainConfig, out, init=None,
                width_mult: float = 1.0, val_size: int = 0, device="cpu", progress: bool = True) -> Checkpoint:
    """Train from scratch (or fine-tune `init`), evaluate on test, save a checkpoint at `out`.

    An interrupted run resumes from `<out>.state` when called again with the same arguments.
    """
    spec = get_spec(dataset)
    train_split = load_split(dataset, "train", data_dir)
    test_split = load_split(dataset, "test", data_dir)
    eval_split = test_split
    if val_size:
        train_split, eval_split = split_validation(train_split, val_size)
    if init:
        model, base = load_model(init)
        if base.num_classes != spec.num_classes:
            raise OrchestratorError(f"--init model has {base.num_classes} classes, {dataset} has {spec.num_classes}")
        normalization, arch = base.normalization, base.arch
    else:
        model = build_model(arch, spec.num_classes, width_mult=width_mult)
        normalization = {"mean": list(spec.mean), "std": list(spec.std)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = out.with_name(out.name + ".state")
    t0 = time.perf_counter()
    history = train(model, train_split, config, normalization, eval_split=eval_split, device=device,
                    progress=progress, state_path=state)
    seconds = time.perf_counter() - t0
    test = evaluate(model, test_split, normalization, device, config.eval_batch_size, config.amp)
    metrics = {"test_acc": test["acc"], "test_loss": test["loss"], "train_seconds": seconds,
               "eval_split": "val" if val_size else "test", "history": history}
    if val_size:
        metrics["val_acc"] = history[-1]["eval_acc"] if history else None
    run_config = {"train": config.model_dump(), "arch": arch, "dataset": dataset, "init": str(init) if init else None,
                  "width_mult": width_mult, "val_size": val_size, "environment": environment()}
    ckpt = from_model(model.cpu(), dataset, normalization, run_config, metrics)
    save_checkpoint(out, ckpt)
    state.unlink(missing_ok=True)
    return ckpt


def evaluate_checkpoint(path, *, data_dir=None, split: str = "test", val_size: int = 5000, npz=None,
                        device="cpu") -> dict:
    ckpt = load_checkpoint(path)
    spec = get_spec(ckpt.dataset)
    if npz:
        data = load_arrays(npz, num_classes=spec.num_classes)
    elif split == "val":
        data = split_validation(load_split(ckpt.dataset, "train", data_dir), val_size)[1]
    else:
        data = load_split(ckpt.dataset, split, data_dir)
    result = evaluate(ckpt.build(device), data, ckpt.normalization, device)
    return {"arch": ckpt.arch, "split": data.name, **result}
