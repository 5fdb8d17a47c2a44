"""End-to-end jobs of the CLI besides pipelines: training, evaluation, the sweep and the sensitivity analysis."""

from __future__ import annotations

import platform
import time

import torch

from . import __version__
from .checkpoint import Checkpoint, from_model, load_checkpoint, load_model, save_checkpoint
from .data import get_spec, load_arrays, load_split, split_validation
from .errors import OrchestratorError
from .models import build_model
from .paths import read_json, writable_dir, writable_file, write_json
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
    out = writable_file(out)
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
    else:
        data = _eval_split(ckpt.dataset, data_dir, split, val_size)
    result = evaluate(ckpt.build(device), data, ckpt.normalization, device)
    return {"arch": ckpt.arch, "split": data.name, **result}


# analysis jobs (no retraining; compression jobs are pipelines: pipeline.run_pipeline) ----------------

def sweep_checkpoint(path, *, methods, ratios, data_dir=None, split: str = "test", val_size: int = 5000,
                     out_dir, device="cpu", on_point=None, bn_recalibration: int = 0) -> list[dict]:
    """Method 1 of the seed for every method and ratio; resumable (rows are kept in sweep.json)."""
    from . import plots
    from .pruning.sweep import sweep, table_markdown

    out_dir = writable_dir(out_dir)
    model, ckpt = load_model(path, device)
    data = _eval_split(ckpt.dataset, data_dir, split, val_size)
    store = out_dir / "sweep.json"
    done = read_json(store, {"checkpoint": str(path), "rows": []})["rows"]

    def save(rows):
        write_json(store, {"checkpoint": str(path), "rows": rows})
        on_point and on_point(rows[-1])

    train_split = None
    if bn_recalibration:  # the statistics come from training images that are not the evaluated ones
        train_split = load_split(ckpt.dataset, "train", data_dir)
        if split == "val":
            train_split = split_validation(train_split, val_size)[0]
    rows = sweep(model, data, ckpt.normalization, methods, ratios, device, done=done, on_point=save,
                 bn_recalibration=bn_recalibration, train_split=train_split)
    (out_dir / "sweep.md").write_text(table_markdown(rows))
    plots.accuracy_vs_ratio(rows, out_dir / "sweep.png", f"{ckpt.arch}: accuracy without retraining ({data.name})",
                            footer=f"orchestrator sweep {path} --out {out_dir}")
    return rows


def sensitivity_checkpoint(path, *, ratios, data_dir=None, split: str = "val", val_size: int = 5000,
                           groups: str = "internal", out_dir, device="cpu", on_point=None) -> dict:
    """Li et al.'s per-group sensitivity table (resumable: sensitivity.json) and its plot."""
    from . import plots
    from .pruning.sensitivity import sensitivity
    from .pruning.structured import kinds

    out_dir = writable_dir(out_dir)
    model, ckpt = load_model(path, device)
    data = _eval_split(ckpt.dataset, data_dir, split, val_size)
    store = out_dir / "sensitivity.json"
    done = read_json(store, {}).get("table")

    def save(table):
        write_json(store, {"checkpoint": str(path), "split": data.name, "table": table})
        on_point and on_point(table)

    table = sensitivity(model, data, ckpt.normalization, ratios, kinds(groups), device=device, done=done,
                        on_point=save)
    save(table)
    plots.sensitivity_plot(table, out_dir / "sensitivity.png", f"{ckpt.arch}: pruning one group at a time ({data.name})",
                           footer=f"orchestrator sensitivity {path} --out {out_dir}")
    return table


def _eval_split(dataset: str, data_dir, split: str, val_size: int):
    if split == "val":
        return split_validation(load_split(dataset, "train", data_dir), val_size)[1]
    return load_split(dataset, split, data_dir)
