"""Pipelines: compression steps composed in order, each one's effect on accuracy and footprint recorded.

A pipeline (YAML or dict) names a base checkpoint and a list of steps, each a one-key mapping:
  prune: <pruning method config>      (structured or unstructured; masks are made permanent)
  finetune: <FinetuneConfig>          (kd allowed; zeros of pruned weights stay zero)
  quantize: <QuantConfig>             (ptq or qat; must come after every prune/finetune step)
Steps are typed (`steps`): validated once, they run, log and hash as the objects they became.
After every step the model is evaluated (validation split when `val_size` > 0, else test) and
measured; the end result is exported, reloaded from the file, evaluated on the test set and
measured again, so the recorded final footprint is the exported file's. Finished steps are saved
under `<out>.work/`, so a killed pipeline resumes at the step it was in. This is what a study trial runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .checkpoint import from_model, load_model, save_checkpoint
from .data import load_split, split_validation
from .errors import OrchestratorError
from .footprint import measure
from .footprint.export import export, load_export
from .models import layer_groups
from .paths import read_json, writable_file, write_json
from .qformat import weight_spec
from .finetune import FinetuneData, finetune
from .pruning import finalize_, prune_, sparsity
from .pruning.core import effective_weight, prunable_layers
from .quant import quantize_
from .steps import FinetuneStep, PipelineConfig, PruneStep, QuantizeStep, Step, load_pipeline
from .train import evaluate

@torch.no_grad()
def hold_zeros_(model: nn.Module) -> None:
    """Attach masks for the weights that are exactly zero, so training keeps them zero."""
    for module in prunable_layers(model).values():
        w = effective_weight(module)
        if bool((w == 0).any()) and not hasattr(module, "weight_mask"):
            torch_prune.custom_from_mask(module, "weight", w != 0)


def _sizes(model: nn.Module, act_bits: int | None) -> dict:
    fp = measure(model, act_bits=act_bits)
    return {"params": fp.params, "nonzero": fp.nonzero, "param_bits": fp.param_bits, "act_bits": fp.act_bits,
            "activation_peak_bits": fp.activation_peak_bits, "total_bits": fp.total_bits, "macs": fp.macs,
            "macs_sparse": fp.macs_sparse}


def realized(model: nn.Module) -> dict:
    """What the model ended up as, per layer group: sparsity, weight and activation bits, the width spec."""
    zeros, sizes, bits, acts = {}, {}, {}, {}
    layers = prunable_layers(model)
    for group, names in layer_groups(model).items():
        ws = [effective_weight(layers[n]) for n in names]
        zeros[group], sizes[group] = sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)
        bits[group] = sorted({(weight_spec(layers[n]) or (None, 32))[1] for n in names})
        acts[group] = sorted({layers[n].act_quant.bits for n in names if hasattr(layers[n], "act_quant")})
    one = lambda b: b[0] if len(b) == 1 else b  # noqa: E731
    return {"sparsity": {g: round(zeros[g] / sizes[g], 4) for g in sizes},
            "bits": {g: one(b) for g, b in bits.items()},
            **({"act_bits": {g: one(b) for g, b in acts.items() if b}} if any(acts.values()) else {}),
            "widths": getattr(model, "widths", None)}


class Timer(dict):
    """Seconds per stage of a pipeline (load, train, evaluate, footprint, cache, save, export), summed over its
    uses: the record shows what a trial spends outside training. A plain dict goes into records and
    checkpoints (`weights_only` loading admits no other class)."""

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = self.get(stage, 0.0) + time.perf_counter() - t0


class StepCache:
    """Finished steps shared between pipelines (study trials): a step's result is stored under a hash of
    everything that determines it (base checkpoint file, data, validation size, the steps up to it), so
    a trial whose first steps match an earlier trial's loads them instead of recomputing them."""

    def __init__(self, folder, base, data_dir, val_size: int, teacher, act_bits):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        st = Path(base).stat()
        self.identity = {"base": str(Path(base).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                         "data_dir": str(data_dir), "val_size": val_size, "teacher": str(teacher),
                         "act_bits": act_bits}
        self.hits = 0

    def key(self, steps: list) -> str:
        """Hash of the identity and the steps as validated (defaults filled in: equal configs, equal keys)."""
        dumped = [s.model_dump(mode="json") for s in steps]
        blob = json.dumps({**self.identity, "steps": dumped}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def get(self, key: str, device):
        ckpt, rec = self.folder / f"{key}.pt", self.folder / f"{key}.json"
        if not (ckpt.is_file() and rec.is_file()):
            return None
        self.hits += 1
        return load_model(ckpt, device)[0], json.loads(rec.read_text())

    def put(self, key: str, model: nn.Module, record: dict, dataset: str, normalization: dict) -> None:
        save_checkpoint(self.folder / f"{key}.pt", from_model(model.cpu(), dataset, normalization))
        write_json(self.folder / f"{key}.json", record)


def run_pipeline(config: PipelineConfig, *, base=None, data_dir=None, out, device="cpu", progress=False,
                 cache_dir=None, evaluate_steps: bool = True) -> dict:
    """Run every step; returns {'steps': [...records], 'final': {...}, 'export': path}.

    Resumable (finished steps are kept in `<out>.work/`); with `cache_dir`, steps are shared with
    other pipelines through a `StepCache`. Without `evaluate_steps` only the last step is evaluated (a
    study trial: its objective is the last step's accuracy; the others' stay None in the record).
    """
    base = base or config.base
    if not base:
        raise OrchestratorError("no base checkpoint: give one in the pipeline ('base:') or on the command line")
    out = writable_file(out)
    timer = Timer()
    with timer("load"):
        model, ckpt = load_model(base, device)
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    dumped = config.model_dump(mode="json")  # the resolved config, as recorded everywhere below
    started = {"base": str(base), "pipeline": dumped}  # what the kept steps belong to
    stamp = work / "pipeline.json"
    if read_json(stamp, started) != started:
        if len(read_json(work / "records.json", [])) > 1:  # finished steps of another pipeline: never thrown away
            raise OrchestratorError(f"{work} holds the unfinished steps of another pipeline or base; rerun that one "
                                    f"to finish it, or delete {work} to start this one")
        shutil.rmtree(work)  # nothing finished there (e.g. a run refused by a bad value): replaced without asking
        work.mkdir(parents=True)
    write_json(stamp, started)
    with timer("load"):
        train_split = load_split(ckpt.dataset, "train", data_dir)
        test = load_split(ckpt.dataset, "test", data_dir)
        val = None
        if config.val_size:
            train_split, val = split_validation(train_split, config.val_size)
        teacher = _teacher(config.teacher or base, ckpt, device) if config.uses_kd() else None
    eval_split = val if val is not None else test
    act_bits = config.act_bits
    cache = StepCache(cache_dir, base, data_dir, config.val_size, config.teacher, act_bits) if cache_dir else None
    records_path = work / "records.json"
    records = read_json(records_path, [])
    if not records:
        with timer("cache"):
            hit = cache.get(cache.key([]), device) if cache else None
        if hit:
            records.append(hit[1])
        else:
            with timer("evaluate"):
                eval_acc = evaluate(model, eval_split, ckpt.normalization, device)["acc"]
                test_acc = eval_acc if eval_split is test else evaluate(model, test, ckpt.normalization, device)["acc"]
            with timer("footprint"):
                sizes = _sizes(model, act_bits)
            records.append({"step": "base", "config": {"checkpoint": str(base)}, "seconds": 0.0,
                            "eval_acc": eval_acc, "test_acc": test_acc, **sizes})
            if cache:
                with timer("cache"):
                    cache.put(cache.key([]), model, records[0], ckpt.dataset, ckpt.normalization)
                model.to(device)
        write_json(records_path, records)
    done = len(records) - 1
    if done:
        model = load_model(work / f"step{done}.pt", device)[0]
    for i, step in enumerate(config.steps[done:], start=done + 1):
        key = cache.key(config.steps[:i]) if cache else None
        evaluated = evaluate_steps or i == len(config.steps)
        with timer("cache"):
            hit = cache.get(key, device) if cache else None
        if hit:
            model, record = hit
            if evaluated and record.get("eval_acc") is None:  # cached by a study, which evaluates its last step only
                with timer("evaluate"):
                    record = {**record, "eval_acc": evaluate(model.to(device), eval_split, ckpt.normalization,
                                                             device)["acc"]}
        else:
            model, record = _run_step(model, step, i, work, train_split, val, eval_split, ckpt, teacher,
                                      act_bits, device, progress, timer, evaluated)
            if cache:
                with timer("cache"):
                    cache.put(key, model, record, ckpt.dataset, ckpt.normalization)
        with timer("save"):
            save_checkpoint(work / f"step{i}.pt", from_model(model.cpu(), ckpt.dataset, ckpt.normalization))
        model.to(device)
        records.append(record)
        write_json(records_path, records)
    export_path = out.with_suffix(".orcx")
    with timer("export"):
        info = export(model.cpu(), export_path, dataset=ckpt.dataset, normalization=ckpt.normalization)
        exported, _ = load_export(export_path)
    with timer("evaluate"):
        test_acc = evaluate(exported.to(device), test, ckpt.normalization, device)["acc"]
    with timer("footprint"):
        sizes = _sizes(exported.cpu(), act_bits)
    final = {"test_acc": test_acc, "base_test_acc": records[0]["test_acc"], **sizes,
             "file_bytes": info["file_bytes"], "payload_bytes": info["payload_bytes"]}
    final["realized"] = realized(exported)
    final["compression"] = records[0]["total_bits"] / final["total_bits"]
    final["param_compression"] = records[0]["param_bits"] / final["param_bits"]
    result = {"pipeline": dumped, "base": str(base), "steps": records, "final": final,
              "export": str(export_path), "cache_hits": cache.hits if cache else 0, "timings": dict(timer)}
    metrics = {"test_acc": final["test_acc"], "eval_acc": records[-1]["eval_acc"], "eval_split": eval_split.name,
               "sparsity": sparsity(exported), "pipeline": result}
    with timer("save"):
        save_checkpoint(out, from_model(exported.cpu(), ckpt.dataset, ckpt.normalization,
                                        {"pipeline": dumped, "base": str(base),
                                         "teacher": str(config.teacher) if config.teacher else None}, metrics))
        write_json(out.with_suffix(".json"), result)
        shutil.rmtree(work)
    return result


def _teacher(path, student, device):
    model, ckpt = load_model(path, device)
    if ckpt.num_classes != student.num_classes or ckpt.normalization != student.normalization:
        raise OrchestratorError(f"teacher {path} does not match the student (classes {ckpt.num_classes} vs "
                                f"{student.num_classes}, or a different input normalization)")
    return model


def _run_step(model, step, i, work, train_split, val, eval_split, ckpt, teacher, act_bits, device, progress,
              timer: Timer, evaluate_step: bool = True):
    data = FinetuneData(train=train_split, val=val, normalization=ckpt.normalization, device=device,
                     progress=progress, work_dir=work / f"step{i}", teacher=teacher, eval_each_epoch=False)
    t0 = time.perf_counter()
    cfg = step.config
    if step.kind == "prune":
        model = finalize_(prune_(model, cfg, data))
    elif step.kind == "finetune":
        hold_zeros_(model)
        finetune(model, cfg, data, "finetune")
        finalize_(model)
    else:
        model = quantize_(model, cfg, data)
    seconds = time.perf_counter() - t0
    timer["train"] = timer.get("train", 0.0) + seconds
    with timer("evaluate"):
        eval_acc = evaluate(model, eval_split, ckpt.normalization, device)["acc"] if evaluate_step else None
    with timer("footprint"):
        sizes = _sizes(model.cpu(), act_bits)
    record = {"step": step.kind, "config": cfg.model_dump(mode="json"), "seconds": seconds, "eval_acc": eval_acc,
              **sizes, "log": data.log}
    shutil.rmtree(work / f"step{i}", ignore_errors=True)
    return model, record


__all__ = ["FinetuneStep", "PipelineConfig", "PruneStep", "QuantizeStep", "Step", "StepCache", "load_pipeline",
           "run_pipeline", "hold_zeros_"]
