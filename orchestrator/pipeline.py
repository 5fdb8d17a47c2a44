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
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import prune as torch_prune

from .checkpoint import from_model, load_model, save_checkpoint
from .data import load_split, split_validation
from .errors import OrchestratorError
from .footprint import measure
from .footprint.export import export, load_export
from .models import layer_groups
from .paths import read_json, writable_file, write_json
from .qformat import act_quant_of, weight_spec
from .finetune import FinetuneData, finetune
from .pruning import finalize_, prune_, sparsity
from .pruning.core import effective_weight, prunable_layers
from .quant import quantize_
from .steps import FinetuneStep, PipelineConfig, PruneStep, QuantizeStep, Step, load_pipeline, step_epochs
from .train import evaluate

@torch.no_grad()
def hold_zeros_(model: nn.Module) -> None:
    """Attach masks for the weights that are exactly zero, so training keeps them zero."""
    for module in prunable_layers(model).values():
        w = effective_weight(module)
        if bool((w == 0).any()) and not hasattr(module, "weight_mask"):
            torch_prune.custom_from_mask(module, "weight", w != 0)


def _sizes(model: nn.Module, act_bits: int | None) -> dict:
    return _totals(measure(model, act_bits=act_bits))


def _totals(fp) -> dict:
    """A Footprint's totals, as a record holds them."""
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
        acts[group] = sorted({q.bits for n in names if (q := act_quant_of(layers[n])) is not None})
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
                 cache_dir=None, evaluate_steps: bool = True, test: bool = True) -> dict:
    """Run every step; returns {'steps': [...records], 'final': {...}, 'export': path, 'footprint': the exported
    model's Footprint (in memory only: the written record holds its totals)}.

    Resumable (finished steps are kept in `<out>.work/`); with `cache_dir`, steps are shared with
    other pipelines through a `StepCache`. Without `evaluate_steps` only the last step is evaluated (a
    study trial: its objective is the last step's accuracy; the others' stay None in the record). Without
    `test` the exported model is not evaluated on the test set (`final.test_acc` None): a study measures
    test accuracy for its final front only (`study.runner.test_front`).
    """
    base = base or config.base
    if not base:
        raise OrchestratorError("no base checkpoint: give one in the pipeline ('base:') or on the command line")
    out = writable_file(out)
    timer = Timer()
    with timer("load"):
        model, ckpt = load_model(base, device)
    for step in config.steps:  # a model-dependent error (a group the model lacks) comes before any work
        step.check(model)
    run = _Run(config, str(base), ckpt, device, progress, timer, evaluate_steps, test)
    run.load_data(data_dir, cache_dir)  # a data-dependent error comes before the store is written
    run.work = _open_store(out.with_name(out.name + ".work"), config, base)
    model, records = run.steps(model, run.base_record(model))
    return run.finish(model, records, out)


def _same(stored: dict, started: dict) -> bool:
    """Whether a store's stamp names this base and pipeline, the stamp validated again (a record written before
    a config's encoding changed names the same pipeline)."""
    try:
        return stored == started or (stored["base"] == started["base"] and PipelineConfig.model_validate(
            stored["pipeline"]).model_dump(mode="json") == started["pipeline"])
    except (ValidationError, KeyError, TypeError):
        return False


def _open_store(work: Path, config: PipelineConfig, base) -> Path:
    """The resume store of a pipeline: its finished steps are kept, a store of another pipeline or base is
    refused while it holds finished steps and replaced without asking while it holds none."""
    work.mkdir(parents=True, exist_ok=True)
    started = {"base": str(base), "pipeline": config.model_dump(mode="json")}  # what the kept steps belong to
    stamp = work / "pipeline.json"
    if not _same(read_json(stamp, started), started):
        if len(read_json(work / "records.json", [])) > 1:  # finished steps of another pipeline: never thrown away
            raise OrchestratorError(f"{work} holds the unfinished steps of another pipeline or base; rerun that one "
                                    f"to finish it, or delete {work} to start this one")
        shutil.rmtree(work)  # nothing finished there (e.g. a run refused by a bad value): replaced without asking
        work.mkdir(parents=True)
    write_json(stamp, started)
    return work


@dataclass
class _Run:
    """One pipeline run: what every stage reads (the data, the teacher, the cache) and its three stages, the
    base's record, the steps (resumed, cached or run) and the export with its measurement."""

    config: PipelineConfig
    base: str
    ckpt: object
    device: str
    progress: bool
    timer: Timer
    evaluate_steps: bool
    test_final: bool = True
    work: Path | None = None
    train_split: object = None
    val: object = None
    test: object = None
    teacher: nn.Module | None = None
    cache: StepCache | None = None
    trained: float = 0.0  # epochs of the steps this run trained (not resumed, not from the cache)

    @property
    def eval_split(self):
        return self.val if self.val is not None else self.test

    def load_data(self, data_dir, cache_dir) -> None:
        c = self.config
        with self.timer("load"):
            self.train_split = load_split(self.ckpt.dataset, "train", data_dir)
            self.test = load_split(self.ckpt.dataset, "test", data_dir)
            if c.val_size:
                self.train_split, self.val = split_validation(self.train_split, c.val_size)
            self.teacher = _teacher(c.teacher or self.base, self.ckpt, self.device) if c.uses_kd() else None
        if cache_dir:
            self.cache = StepCache(cache_dir, self.base, data_dir, c.val_size, c.teacher, c.act_bits)

    def evaluate(self, model, split) -> float:
        with self.timer("evaluate"):
            return evaluate(model, split, self.ckpt.normalization, self.device)["acc"]

    def cached(self, steps: list):
        if self.cache is None:
            return None
        with self.timer("cache"):
            return self.cache.get(self.cache.key(steps), self.device)

    def put(self, steps: list, model, record: dict) -> None:
        if self.cache is not None:
            with self.timer("cache"):
                self.cache.put(self.cache.key(steps), model, record, self.ckpt.dataset, self.ckpt.normalization)
            model.to(self.device)

    def base_record(self, model) -> list[dict]:
        """The records so far: the resume store's, or the base's alone (cached, or evaluated and measured)."""
        records = read_json(self.work / "records.json", [])
        if records:
            return records
        hit = self.cached([])
        if hit:
            records.append(hit[1])
        else:
            eval_acc = self.evaluate(model, self.eval_split)
            test_acc = eval_acc if self.eval_split is self.test else self.evaluate(model, self.test)
            with self.timer("footprint"):
                sizes = _sizes(model, self.config.act_bits)
            records.append({"step": "base", "config": {"checkpoint": self.base}, "seconds": 0.0,
                            "eval_acc": eval_acc, "test_acc": test_acc, **sizes})
            self.put([], model, records[0])
        write_json(self.work / "records.json", records)
        return records

    def steps(self, model, records: list[dict]):
        """The steps after the finished ones, each saved in the store as it ends."""
        done = len(records) - 1
        if done:
            model = load_model(self.work / f"step{done}.pt", self.device)[0]
        steps = self.config.steps
        for i, step in enumerate(steps[done:], start=done + 1):
            evaluated = self.evaluate_steps or i == len(steps)
            hit = self.cached(steps[:i])
            if hit:
                model, record = hit
                if evaluated and record.get("eval_acc") is None:  # cached by a study: it evaluates its last step only
                    record = {**record, "eval_acc": self.evaluate(model.to(self.device), self.eval_split)}
            else:
                model, record = self.run_step(model, step, i, evaluated)
                self.put(steps[:i], model, record)
            with self.timer("save"):
                save_checkpoint(self.work / f"step{i}.pt",
                                from_model(model.cpu(), self.ckpt.dataset, self.ckpt.normalization))
            model.to(self.device)
            records.append(record)
            write_json(self.work / "records.json", records)
        return model, records

    def run_step(self, model, step, i: int, evaluated: bool):
        data = FinetuneData(train=self.train_split, val=self.val, normalization=self.ckpt.normalization,
                            device=self.device, progress=self.progress, work_dir=self.work / f"step{i}",
                            teacher=self.teacher, eval_each_epoch=False)
        t0 = time.perf_counter()
        model = STEP_HANDLERS[step.kind](model, step.config, data)
        seconds = time.perf_counter() - t0
        self.timer["train"] = self.timer.get("train", 0.0) + seconds
        self.trained += step_epochs(step.model_dump(mode="json"))
        eval_acc = self.evaluate(model, self.eval_split) if evaluated else None
        with self.timer("footprint"):
            sizes = _sizes(model.cpu(), self.config.act_bits)
        record = {"step": step.kind, "config": step.config.model_dump(mode="json"), "seconds": seconds,
                  "eval_acc": eval_acc, **sizes, "log": data.log}
        shutil.rmtree(self.work / f"step{i}", ignore_errors=True)
        return model, record

    def finish(self, model, records: list[dict], out: Path) -> dict:
        """Export, reload, evaluate on the test set and measure the file's model; save it and the record."""
        ckpt, dumped = self.ckpt, self.config.model_dump(mode="json")
        export_path = out.with_suffix(".orcx")
        with self.timer("export"):
            info = export(model.cpu(), export_path, dataset=ckpt.dataset, normalization=ckpt.normalization)
            exported, _ = load_export(export_path)
        test_acc = self.evaluate(exported.to(self.device), self.test) if self.test_final else None
        with self.timer("footprint"):
            fp = measure(exported.cpu(), act_bits=self.config.act_bits)
        sizes = _totals(fp)
        final = {"test_acc": test_acc, "base_test_acc": records[0]["test_acc"], **sizes,
                 "file_bytes": info["file_bytes"], "payload_bytes": info["payload_bytes"]}
        final["realized"] = realized(exported)
        final["compression"] = records[0]["total_bits"] / final["total_bits"]
        final["param_compression"] = records[0]["param_bits"] / final["param_bits"]
        result = {"pipeline": dumped, "base": self.base, "steps": records, "final": final,
                  "export": str(export_path), "cache_hits": self.cache.hits if self.cache else 0,
                  "timings": dict(self.timer), "trained_epochs": self.trained}
        metrics = {"test_acc": final["test_acc"], "eval_acc": records[-1]["eval_acc"],
                   "eval_split": self.eval_split.name, "sparsity": sparsity(exported), "pipeline": result}
        teacher = str(self.config.teacher) if self.config.teacher else None
        with self.timer("save"):
            save_checkpoint(out, from_model(exported.cpu(), ckpt.dataset, ckpt.normalization,
                                            {"pipeline": dumped, "base": self.base, "teacher": teacher}, metrics))
            write_json(out.with_suffix(".json"), result)
            shutil.rmtree(self.work)
        return {**result, "footprint": fp}  # in memory only: a study's tracker logs it, never measures again


def _teacher(path, student, device):
    model, ckpt = load_model(path, device)
    if ckpt.num_classes != student.num_classes or ckpt.normalization != student.normalization:
        raise OrchestratorError(f"teacher {path} does not match the student (classes {ckpt.num_classes} vs "
                                f"{student.num_classes}, or a different input normalization)")
    return model


def _prune_step(model, cfg, data):
    return finalize_(prune_(model, cfg, data))


def _finetune_step(model, cfg, data):
    hold_zeros_(model)
    finetune(model, cfg, data, "finetune")
    return finalize_(model)


STEP_HANDLERS = {"prune": _prune_step, "finetune": _finetune_step, "quantize": quantize_}  # step kind -> handler:
# (model, its typed config, FinetuneData) -> the transformed model; a new step kind is one entry here


__all__ = ["FinetuneStep", "PipelineConfig", "PruneStep", "QuantizeStep", "Step", "StepCache", "load_pipeline",
           "run_pipeline", "hold_zeros_"]
