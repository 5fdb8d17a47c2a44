"""Everything a report says, gathered from the Optuna study and the trials' own records (never typed)."""

from __future__ import annotations

import datetime as dt

from ..checkpoint import load_model
from ..errors import OrchestratorError
from ..footprint import measure
from ..footprint.activations import activation_report
from ..pruning import METHODS, sparsity
from ..study import status
from ..study.pareto import method_curves, rows
from ..study.peers import study_minutes
from ..workflows import environment

ANSWER_FLOOR = 0.05  # a budget's answer is at most this far below the dense model (validation), unless the
# space sets its own floor (constraints.max_accuracy_drop)
BUDGETS = [(1_000_000, "1 MB"), (300_000, "300 KB"), (100_000, "100 KB"), (30_000, "30 KB")]  # bytes

DESCRIPTIONS = {
    "none": "no pruning (quantization only, or the dense base model)",
    "global_magnitude": "zero the smallest |w| over all layers at once, one threshold (seed method 1)",
    "layer_magnitude": "zero the same fraction of smallest |w| in every layer",
    "random": "zero random weights (the control)",
    "han": "Han et al. 2015: prune, retrain with the mask fixed, repeat (seed method 2)",
    "lottery": "iterative magnitude pruning with weight rewinding (Frankle et al.)",
    "l1_filter": "Li et al. 2017: remove the filters with the smallest L1 norm, per layer or stage (seed method 3)",
    "random_filter": "remove random filters (the structured control)",
    "taylor_filter": "Molchanov et al. 2019: remove the channels whose loss change (first-order Taylor) is smallest",
    "thinet": "Luo et al. 2017: remove the channels the next layer reconstructs best without, refit (seed method 4)",
    "slimming": "Liu et al. 2017: L1 on BN scales while training, remove the smallest scales globally",
}


def memory_profile(model) -> dict:
    """Where a model's memory goes: live activation bytes along the network (peak marked) and parameter
    bytes per layer, for the footprint slide."""
    fp = measure(model)
    act = activation_report(model, bits=fp.act_bits)
    per_layer: dict = {}
    for t in fp.tensors:
        layer = t.name.rsplit(".", 1)[0]
        per_layer[layer] = per_layer.get(layer, 0) + t.storage_bits / 8
    return {"live": [(name, bits / 8) for name, bits in act["timeline"]], "peak_at": fp.activation_peak_at,
            "peak_bytes": fp.activation_peak_bits / 8, "param_bytes": per_layer, "act_bits": fp.act_bits,
            "total_bytes": fp.total_bits / 8}


def _kd(data: list[dict]) -> dict:
    """Fine-tuned trials' validation accuracy with and without KD: {flag: {n, mean, best}}."""
    kd = {}
    for flag in (False, True):
        accs = [r["val_acc"] for r in data if r.get("finetune_epochs", 0) and bool(r.get("kd")) == flag]
        if accs:
            kd[flag] = {"n": len(accs), "mean": sum(accs) / len(accs), "best": max(accs)}
    return kd


def _importances(study, space, originals: list) -> dict:
    """fANOVA importance of each parameter per objective over the trials that ran (repeats are not observations),
    or {'unavailable': why} for too few or too uniform trials."""
    try:
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ran = optuna.create_study(directions=study.directions)
            ran.add_trials(originals)
            return {objective: optuna.importance.get_param_importances(
                ran, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i])
                for i, objective in enumerate(space.objectives)}
    except Exception as exc:  # too few or too uniform trials
        return {"unavailable": str(exc).splitlines()[0][:120]}


def _chosen(ckpt_path, base_model) -> tuple[dict | None, dict]:
    """(the chosen trial's widths and sparsity, memory profiles of the dense and the chosen model)."""
    profiles = {"dense": memory_profile(base_model)}
    if not ckpt_path:
        return None, profiles
    try:
        model, _ = load_model(ckpt_path)
    except OrchestratorError:
        return None, profiles
    profiles["chosen"] = memory_profile(model)
    return {"widths": model.widths, "sparsity": sparsity(model)}, profiles


def collect(study, space) -> dict:
    data = rows(study)
    if not data:
        raise OrchestratorError(f"study {study.study_name!r} has no finished trial: nothing to report")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    base_model, base_ckpt = load_model(space.base)
    base_fp = measure(base_model)
    first = data[0]
    dense = {"arch": base_ckpt.arch, "params": base_fp.params, "param_bytes": base_fp.param_bits / 8,
             "activation_peak_bytes": base_fp.activation_peak_bits / 8, "total_bytes": base_fp.total_bits / 8,
             "activation_peak_at": base_fp.activation_peak_at, "macs": base_fp.macs,
             "val_acc": first["base_val_acc"], "test_acc": first["base_test_acc"],
             "val_warning": space.validation_warning()}
    front = [r for r in data if r["pareto"]]
    floor = space.constraints.max_accuracy_drop or ANSWER_FLOOR
    answer = []
    for limit, label in BUDGETS:  # a budget is answered by a model within the floor, never a collapsed one
        fits = [r for r in data if r["footprint_bytes"] <= limit and r["feasible"]
                and r["val_acc"] >= dense["val_acc"] - floor]
        best = max(fits, key=lambda r: (r["val_acc"], r["pareto"])) if fits else None  # ties: the front's (tested)
        answer.append({"budget": label, "bytes": limit, "trial": best})
    near = [r for r in data if r["val_acc"] >= dense["val_acc"] - 0.01]
    smallest = min(near, key=lambda r: (r["footprint_bytes"], not r["pareto"])) if near else None
    best = smallest or max(front or data, key=lambda r: r["val_acc"])
    best_model, profiles = _chosen(trials[best["trial"]].user_attrs.get("checkpoint"), base_model)
    by_bits: dict = {}
    for r in data:
        b = r.get("bits", 32)
        by_bits[b] = max(by_bits.get(b, 0), r["val_acc"])
    curves = method_curves(data)
    methods = sorted({r.get("method", "none") for r in data})
    return {"study": study.study_name, "space": space.model_dump(), "dense": dense, "rows": data, "front": front,
            "answer": answer, "floor": floor, "infeasible": sum(not r["feasible"] for r in data),
            "profiles": profiles, "smallest_near_dense": smallest, "best": best, "best_model": best_model,
            "by_bits": dict(sorted(by_bits.items(), reverse=True)), "kd": _kd(data), "curves": curves,
            "importances": _importances(study, space, [trials[r["trial"]] for r in data]),
            "counts": status(study), "environment": environment(),
            "methods": {m: DESCRIPTIONS[m] if m in DESCRIPTIONS else (METHODS[m][0].__doc__ or m).splitlines()[0]
                        for m in methods},
            "hours": study_minutes(study) / 60,
            "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "pipelines": {r["trial"]: trials[r["trial"]].user_attrs.get("pipeline") for r in front}}
