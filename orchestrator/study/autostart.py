"""Automatic start points (`sampler.start: auto`): per-group sensitivities of the base, then a budget solve.

The first trials of a small study decide what it finds: NSGA-II's first generation is random, TPE's and
GP's start-up trials too. Here they come from the base itself, in seconds to minutes instead of trials:

1. *Sensitivity* (once per base, data and measurement settings; cached beside the study's step cache):
   for every layer group and every value the space can give it, the validation-subset accuracy drop
   when only that group is pruned (each listed method, over the ratio grid), only its weights are
   rounded (each weight precision) or only its input maps are quantized (each activation precision);
   BN statistics re-estimated after pruning and weight rounding, activation ranges calibrated. No training.
2. *Budget solve*: every combination of the space's structural, weight-precision and activation-precision
   values is costed exactly on the real zero-shot model (pruned by the trial's own prune steps, weights
   rounded per layer as the trial's quantize step plans them, activation peak from the liveness trace at
   the planned bits), and its drop predicted as the sum of its groups' drops (HAWQ's and Sony MCT's
   additive model). The non-dominated set of (predicted drop, footprint) is the predicted front.
3. *Spread*: K footprint budgets, log-spaced between the smallest footprint whose best screened candidate
   stays within `max_drop` and the smallest whose best screens within `lossless` (each found by bisection;
   without a screen: the predicted front's); each budget's point is the best screened of its least
   predicted drops. Each trained point is followed by its post-training-quantized `sibling`.

Dimensions the sensitivity cannot see (fine-tune and QAT epochs, KD, weight ranges) take their first listed
value, except that a point the screen measured within `lossless` of the base trains the least each epochs
dimension lists: with 0 listed, its trial is the screened model itself (prune, BN re-estimated, PTQ), seconds
instead of minutes. One such point is added when the screen finds it: every precision at its highest listed
value, pruned as far as the screen stays within `lossless` (the additive prediction cannot find it: low-bit
maps that cost nothing alone compound). Methods that cannot prune one group without training (no per-group
ratio, or data needed) get no start point. The footprint is exact for the configuration before any fine-tune; QAT moves it only by the
weights it rounds to zero.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..data import load_split, resolve_data_dir, split_validation
from ..errors import OrchestratorError
from ..footprint import measure
from ..footprint.activations import activation_report, trace
from ..footprint.params import parameter_rows
from ..models import layer_groups
from ..paths import read_json, write_json
from ..pruning import METHODS, finalize_, prune_
from ..pruning.core import effective_weight, prunable_layers
from ..qformat import FLOAT, attach_act_quant_, quantize_weight_, set_act_bits_
from ..quant import QuantConfig, calibrate_, quantize_
from ..finetune import FinetuneData
from ..train import evaluate, recalibrate_bn
from .pareto import feasible

MAX_COMBINATIONS = 5_000_000  # costed candidates the solve enumerates; a larger space is an error naming its size
NEARLY_LOSSLESS = 0.005  # predicted drop (fraction) of the largest start point's budget


class AutoStart(BaseModel):
    """`sampler.auto`: how `start: auto` measures and spreads its points."""

    model_config = ConfigDict(extra="forbid")
    points: int | None = Field(None, ge=1)  # K start points; default min(5, budget.trials // 3), at least 1
    images: int = Field(1000, ge=50)  # validation images every sensitivity is measured on
    bn_images: int = Field(256, ge=0)  # training images for BN re-estimation and activation ranges
    screen: int = Field(4, ge=0)  # per budget, candidates built zero-shot and measured; the best is proposed
    # (0 or 1: the least predicted drop, no measurement)
    max_drop: float = Field(0.5, gt=0, lt=1)  # zero-shot drop (fraction) of the smallest start point: screened
    # when `screen` > 1, else predicted; before any fine-tune, which recovers much of it
    lossless: float = Field(NEARLY_LOSSLESS, ge=0, lt=1)  # screened drop (fraction): with `screen` > 0, one
    # more start point, every precision at its highest listed value and pruned as far as the screen stays within
    # it (NNCF's int8 corner); a start point within it trains the least each epochs dimension lists (0 listed:
    # the screened model itself, seconds): fine-tuning cannot recover a loss the screen did not see
    descend: int = Field(3, ge=0)  # trials at most below the smallest start point, each while the smallest
    # measured start or follow-up point stays feasible with room (`followup`: a line search along the predicted
    # front)
    promote: int = Field(2, ge=0)  # front points at most rerun with their trained epochs at the next listed value
    siblings: bool = True  # with `screen` > 0 and a listed quant_epochs: each trained start point is followed by
    # its structure at the smallest precisions screened within `lossless` of its highest, at the least listed
    # QAT (0: post-training quantization of the pruned, fine-tuned model the step cache holds: seconds)


# --- the space's values, split into what the sensitivity measures ------------------------------------

STRUCTURE = ("method", "ratio", "channel_ratio")  # plus scale_<group>
TRAINING = ("finetune_epochs", "quant_epochs", "channel_epochs")  # fixed dimensions a lossless start point cuts
WEIGHTS = ("bits",)  # plus bits_<group>
ACTS = ("act_bits",)  # plus act_<group>


def _kind(name: str) -> str:
    if name in STRUCTURE or name.startswith("scale_"):
        return "structure"
    if name in WEIGHTS or name.startswith("bits_"):
        return "weights"
    if name in ACTS or (name.startswith("act_") and name != "act_bits"):
        return "acts"
    return "fixed"


def grid_values(choices) -> list:
    """A dimension's values: a list as given, a range on its grid (8 points if it has no step)."""
    if isinstance(choices, list):
        return list(choices)
    if choices.step is None:
        return sorted({round(float(v), 6) for v in np.linspace(choices.low, choices.high, 8)})
    n = round((choices.high - choices.low) / choices.step)
    return [round(choices.low + i * choices.step, 6) for i in range(n + 1)]


def fixed_value(name: str, choices: list):
    """What a start point gives a dimension the sensitivity cannot see (epochs, KD, weight ranges): its first
    listed value, so a space orders each list with the value its start points should run first."""
    return choices[0]


def _combos(params: dict, kind: str) -> list[dict]:
    names = [k for k in params if _kind(k) == kind]
    return [dict(zip(names, vs)) for vs in itertools.product(*(grid_values(params[k]) for k in names))]


# --- sensitivity -------------------------------------------------------------------------------------

def _zero_shot_steps(pipeline) -> list:
    """The pipeline's prune steps with no fine-tune (a method that cannot prune without training is an error)."""
    prunes = []
    for step in pipeline.steps:
        if step.kind != "prune":
            continue
        cfg = step.config
        if getattr(cfg, "finetune", None) is not None:
            cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"epochs": 0})})
        cfg = cfg.model_copy(update={"bn_recalibration": 0})  # the probe re-estimates BN once, after all steps
        if cfg.needs_data():
            raise OrchestratorError(f"sampler.start auto: method {cfg.method!r} needs training to prune (no "
                                    "zero-shot form to measure); list start points by hand or drop the method")
        prunes.append(cfg)
    return prunes


def measurable(method: str) -> bool:
    """Whether a method can prune one group alone without training (a per-group ratio, a zero-shot form)."""
    if method == "none":
        return True
    cls = METHODS[method][0]
    if "group_ratios" not in cls.model_fields:
        return False
    return not _config(cls, method, "stage1", 0.5).needs_data()  # group names are checked against a model later


def _methods(space) -> list[str]:
    """The space's pruning methods (main step, then channel step) the sensitivity can measure; the others
    get no start point. None at all, while some are listed, is an error before anything is measured."""
    listed = [m for m in space.params().get("method", ["none"])]
    if space.dimensions.channels is not None:
        listed.append(space.dimensions.channels.method)
    listed = list(dict.fromkeys(listed))
    ok = [m for m in listed if measurable(m)]
    if not [m for m in ok if m != "none"] and "none" not in listed:
        raise OrchestratorError(f"sampler.start auto: no method of {listed} can be measured group by group without "
                                "training (a per-group ratio and a zero-shot form are needed); give start points "
                                "by hand (sampler.start: [...]) or none")
    return ok


def _pruned(base: nn.Module, prunes: list) -> nn.Module:
    model = copy.deepcopy(base)
    for cfg in prunes:
        model = finalize_(prune_(model, cfg, None))
    return model


class Probe:
    """Accuracy of zero-shot variants of the base on a fixed validation subset (BN re-estimated)."""

    def __init__(self, train, val, normalization: dict, images: int, bn_images: int, device):
        self.normalization, self.device, self.bn_images = normalization, device, bn_images
        self.train = train
        self.val = val.head(images)
        self.data = FinetuneData(train=train, normalization=normalization, device=str(device))

    def accuracy(self, model: nn.Module, recalibrate: bool = True) -> float:
        model.to(self.device)
        if recalibrate and self.bn_images:
            self.recalibrate(model)
        return evaluate(model, self.val, self.normalization, self.device)["acc"]

    def recalibrate(self, model: nn.Module) -> None:  # whole batches: at 250 a batch, 256 images ran 500
        batch = max(1, min(self.bn_images, 1024))
        recalibrate_bn(model, self.train, self.normalization, self.bn_images, self.device, batch)


class Plans:
    """Every weight and activation combination of the space with the per-layer plan the trial's quantize step
    makes of it, derived once: the sensitivity measures what the plans use, the solve costs them."""

    def __init__(self, space, base: nn.Module):
        params = space.params()
        self.weights, self.acts = _combos(params, "weights"), _combos(params, "acts")
        quants = [_quant_config(space, w, self.acts[0]) for w in self.weights]  # weight plans ignore activations
        self.weight_plans = [q.plan(base) if q is not None else None for q in quants]
        self.act_plans = [_act_plan(base, _quant_config(space, self.weights[0], a)) for a in self.acts]

    def group_specs(self, groups: dict) -> dict[str, list[str]]:
        """Per layer group, the weight precisions (bits, as strings) some plan gives its layers (the first conv and the
        classifier keep their end bits: nothing else of theirs is measured)."""
        group_of = {n: g for g, names in groups.items() for n in names}
        used: dict[str, set] = {g: set() for g in groups}
        for plan in filter(None, self.weight_plans):
            for n, bits in plan.items():
                used[group_of[n]].add(str(bits))
        return {g: sorted(v) for g, v in used.items()}

    def act_values(self) -> list[int]:
        return sorted({b for plan in filter(None, self.act_plans) for b in plan.values()})


def sensitivity_table(space, base: nn.Module, probe: Probe, plans: Plans, cache: Path | None = None) -> dict:
    """{'baseline', 'prune': {method: {group: {ratio: drop}}}, 'weights': {group: {bits: drop}},
    'acts': {group: {bits: drop}}}: drops are fractions; filled incrementally into `cache` (resumable)."""
    table = read_json(cache, None) if cache else None
    # two references: activation drops are measured as PTQ runs them (no BN re-estimation), pruning and weight
    # drops after re-estimating BN, so each is taken against the base re-estimated the same way
    table = table or {"baseline": probe.accuracy(copy.deepcopy(base), recalibrate=False),
                      "baseline_bn": probe.accuracy(copy.deepcopy(base)), "prune": {}, "weights": {}, "acts": {}}

    def save():
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, table)

    groups = layer_groups(base)
    _prune_drops(table, space, base, probe, groups, save)
    _weight_drops(table, space, base, probe, plans.group_specs(groups), groups, save)
    _act_drops(table, space, base, probe, plans.act_values(), groups, save)
    save()
    return table


def _prune_drops(table: dict, space, base, probe: Probe, groups: dict, save) -> None:
    """Each method's drop with one group pruned at each ratio (BN re-estimated), into table['prune']."""
    ratios = sensitivity_ratios(space.params())
    for method in [m for m in _methods(space) if m != "none"]:
        cls = METHODS[method][0]
        grid = ratios if cls.structured else sorted({*ratios, 0.98})  # a global threshold may take a group further
        for g in groups:
            row = table["prune"].setdefault(method, {}).setdefault(g, {})
            for r in grid:
                if str(r) in row:
                    continue
                model = _pruned(base, [_config(cls, method, g, r)]) if r else None
                same = model is None or (cls.structured and model.widths == base.widths)  # no channel of g removable
                row[str(r)] = 0.0 if same else table["baseline_bn"] - probe.accuracy(model)
                save()


def _weight_drops(table: dict, space, base, probe: Probe, used: dict, groups: dict, save) -> None:
    """The drop with one group's weights at each precision the plans use, into table['weights']."""
    clip = _clip(space)
    for g, names in groups.items():
        for bits in used[g]:
            row = table["weights"].setdefault(g, {})
            if bits in row:
                continue
            model = copy.deepcopy(base)
            layers = prunable_layers(model)
            for n in names:
                quantize_weight_(layers[n], int(bits), clip=clip)
            row[bits] = table["baseline_bn"] - probe.accuracy(model)
            save()


def _act_drops(table: dict, space, base, probe: Probe, act_values, groups: dict, save) -> None:
    """The drop with one group's inputs at each activation width (PTQ-calibrated), into table['acts']."""
    first = next(iter(prunable_layers(base)))
    for g, names in groups.items():
        for bits in act_values:
            row = table["acts"].setdefault(g, {})
            if str(bits) in row or names == [first]:
                row.setdefault(str(bits), 0.0)  # the first conv reads the 8-bit image: nothing to quantize
                continue
            model = copy.deepcopy(base)
            layers = prunable_layers(model)
            for n in names:
                if n != first:
                    attach_act_quant_(layers[n], bits, clip=space.quantize.act_scale == "mse")
            calibrate_(model, probe.data, max(1, probe.bn_images))
            row[str(bits)] = table["baseline"] - probe.accuracy(model, recalibrate=False)
            save()


def sensitivity_ratios(params: dict, most: int = 6) -> list[float]:
    """The pruning ratios measured per group: 0 and at most `most` of the space's (ratio and channel ratio,
    times any group multiplier), evenly picked and ends kept; the drop between them is interpolated."""
    values = sorted({r for k in ("ratio", "channel_ratio") if k in params for r in grid_values(params[k]) if r > 0})
    scales = [s for k, v in params.items() if k.startswith("scale_") for s in v]
    if scales:  # per-group ratios reach ratio x multiplier
        values = sorted({min(0.98, r * s) for r in values for s in [1.0, *scales] if r * s > 0})
    if len(values) > most:
        values = [values[round(i * (len(values) - 1) / (most - 1))] for i in range(most)]
    return [0.0, *[round(v, 6) for v in values]]


def _config(cls, method: str, group: str, ratio: float):
    """`method` pruning `group` alone at `ratio`, zero-shot (`cls` has `group_ratios`: see `measurable`)."""
    fields = cls.model_fields
    kw = {"method": method, "ratio": 0.0, "group_ratios": {group: ratio}}
    if "finetune" in fields:
        kw["finetune"] = {"epochs": 0}
    return cls.model_validate(kw)


def _clip(space) -> bool:
    """Whether the start points' int weights use the least-squares clipped range (their first listed
    `weight_scale`, else the space's `quantize.weight_scale`)."""
    listed = space.params().get("weight_scale")
    return (listed[0] if listed else space.quantize.weight_scale) == "mse"


def _quant_config(space, weights: dict, acts: dict) -> QuantConfig | None:
    """The trial's quantize step for these weight and activation values (None: no quantization)."""
    params = {**{k: fixed_value(k, v) for k, v in space.params().items() if isinstance(v, list)}, **weights, **acts}
    for k in ("method", "channel_ratio"):
        params[k] = "none" if k == "method" else 0.0
    params["finetune_epochs"] = params["quant_epochs"] = 0
    steps = space.pipeline(params).steps
    return steps[-1].config if steps[-1].kind == "quantize" else None


# --- exact footprint of every combination ------------------------------------------------------------

def _interp(row: dict, r: float) -> float:
    xs = sorted((float(k), v) for k, v in row.items())
    if not xs:
        return 0.0
    return float(np.interp(r, [x for x, _ in xs], [v for _, v in xs]))


def _group_sparsity(model: nn.Module, groups: dict) -> dict[str, float]:
    layers = prunable_layers(model)
    out = {}
    for g, names in groups.items():
        ws = [effective_weight(layers[n]) for n in names]
        out[g] = sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws))
    return out


def _structure_drop(table: dict, prunes: list, base: nn.Module, model: nn.Module, groups: dict) -> float:
    """Predicted drop of the prune steps: per group, the measured drop at the ratio it gets. Unstructured
    steps count the zeros they left in each group (a global threshold allocates unevenly); structured
    ones their per-group ratio."""
    drop = 0.0
    for cfg in prunes:
        rows = table["prune"][cfg.method]
        if type(cfg).structured:
            for g in groups:
                drop += _interp(rows[g], cfg.group_ratios.get(g, cfg.ratio))
        else:
            for g, s in _group_sparsity(model, groups).items():
                drop += _interp(rows[g], s)
    return drop


def _layer_costs(model: nn.Module, specs: list[int], clip: bool) -> tuple[int, dict]:
    """Bits of every tensor but the conv/linear weights, and each weight's storage bits per precision."""
    layers = prunable_layers(model)
    weights = {f"{n}.weight" for n in layers}
    const = sum(r["storage_bits"] for r in parameter_rows(model) if r["name"] not in weights)
    per = {}
    for spec in specs:
        m = copy.deepcopy(model)
        for module in prunable_layers(m).values():
            quantize_weight_(module, spec, clip=clip)
        per[spec] = {r["name"][:-len(".weight")]: r["storage_bits"] for r in parameter_rows(m) if r["name"] in weights}
    return const, per


def _act_peaks(model: nn.Module, act_plans: list[dict[str, int] | None]) -> list[int]:
    """Activation peak bits (batch 1) of `model` under each per-layer activation plan (None: float maps)."""
    m = copy.deepcopy(model)
    layers = prunable_layers(m)
    first = next(iter(layers))
    for n, module in layers.items():
        if n != first:
            attach_act_quant_(module, 8)
    gm = trace(m, 1)
    out = []
    for plan in act_plans:
        if plan is None:
            out.append(activation_report(model, 1, 32)["peak_bits"])
            continue
        for n, b in plan.items():
            layers[n].act_quant.bits = b
        set_act_bits_(m)  # the one rule of a model's default map width
        out.append(activation_report(m, 1, m.act_bits, gm)["peak_bits"])
    return out


def _act_plan(model: nn.Module, q: QuantConfig | None) -> dict[str, int] | None:
    """Per layer, the bits of its input map, as `quantize_` attaches them (None: float activations)."""
    if q is None or q.act_bits == FLOAT:
        return None
    groups, layers = layer_groups(model), list(prunable_layers(model))
    act = {n: b for g, b in q.group_act_bits.items() for n in groups[g]}
    return {n: act.get(n, q.act_bits) for n in layers[1:]}


def candidates(space, base: nn.Module, table: dict, plans: Plans) -> dict:
    """Every combination costed: arrays `footprint` (bits), `drop` (predicted, fraction) and the params."""
    params = space.params()
    structures, weights, acts = _combos(params, "structure"), plans.weights, plans.acts
    total = len(structures) * len(weights) * len(acts)
    if total > MAX_COMBINATIONS:
        raise OrchestratorError(f"sampler.start auto: the space has {total:,} structure x precision combinations, "
                                f"more than {MAX_COMBINATIONS:,} to cost; list fewer values or give start points")
    groups = layer_groups(base)
    clip = _clip(space)
    ok = set(_methods(space))
    channel = space.dimensions.channels.method if space.dimensions.channels is not None else None
    structures = [s for s in structures if s.get("method", "none") in ok
                  and (not s.get("channel_ratio") or channel in ok)]  # no start point runs what cannot be measured
    if not structures:
        raise OrchestratorError(f"sampler.start auto: every structure of the space uses a method that cannot be "
                                f"measured group by group ({channel!r} removes channels in each); list a channel "
                                "ratio of 0, or give start points by hand")
    w_plans, a_plans = plans.weight_plans, plans.act_plans
    w_drop = np.array([_weights_drop(table, p, base, groups) for p in w_plans])
    a_drop = np.array([_acts_drop(table, p, groups) for p in a_plans])
    specs = sorted({s for p in w_plans if p for s in p.values()})
    peak_cache: dict[str, list[int]] = {}
    foot, drop, index = [], [], []
    fixed = {k: fixed_value(k, v) for k, v in params.items() if isinstance(v, list) and _kind(k) == "fixed"}
    seen = {}
    for si, s in enumerate(structures):
        prunes = _zero_shot_steps(space.pipeline({**fixed, **s, **weights[0], **acts[0]}))
        key = json.dumps([c.model_dump(mode="json") for c in prunes], sort_keys=True)
        if key in seen:  # "none" at every ratio, or a scale no method reads: one structure
            continue
        seen[key] = si
        model = _pruned(base, prunes)
        d_s = _structure_drop(table, prunes, base, model, groups)
        const, per = _layer_costs(model, specs, clip)
        p_bits = np.array([const + sum(per[p[n]][n] for n in p) if p else
                           sum(r["storage_bits"] for r in parameter_rows(model)) for p in w_plans])
        widths = json.dumps(getattr(model, "widths", None), sort_keys=True, default=str)
        if widths not in peak_cache:
            peak_cache[widths] = _act_peaks(model, a_plans)
        a_bits = np.array(peak_cache[widths])
        foot.append((p_bits[:, None] + a_bits[None, :]).ravel())
        drop.append((d_s + w_drop[:, None] + a_drop[None, :]).ravel())
        index.append(np.stack(np.meshgrid(np.full(1, si), np.arange(len(weights)), np.arange(len(acts)),
                                          indexing="ij"), -1).reshape(-1, 3))
    return {"footprint": np.concatenate(foot), "drop": np.concatenate(drop), "index": np.concatenate(index),
            "structures": structures, "weights": weights, "acts": acts, "fixed": fixed}


def _weights_drop(table: dict, plan: dict | None, base: nn.Module, groups: dict) -> float:
    """Per layer, its share (by weights) of its group's measured drop at the layer's precision."""
    if plan is None:
        return 0.0
    layers = prunable_layers(base)
    drop = 0.0
    for g, names in groups.items():
        total = sum(layers[n].weight.numel() for n in names)
        for n in names:
            if plan[n] != FLOAT:
                drop += table["weights"][g][str(plan[n])] * layers[n].weight.numel() / total
    return drop


def _acts_drop(table: dict, plan: dict | None, groups: dict) -> float:
    if plan is None:
        return 0.0
    drop = 0.0
    for g, names in groups.items():
        quantized = [n for n in names if n in plan]
        for n in quantized:
            drop += table["acts"][g][str(plan[n])] / len(quantized)
    return drop


# --- the predicted front and its spread ----------------------------------------------------------------

def predicted_front(c: dict, ceiling: float) -> np.ndarray:
    """Indices of the non-dominated candidates (smaller footprint, smaller predicted drop), by footprint."""
    drop = np.minimum(c["drop"], ceiling)  # accuracy cannot fall below chance: more predicted drop says nothing
    order = np.lexsort((drop, c["footprint"]))
    best, out = math.inf, []
    for i in order:
        if drop[i] < best - 1e-12:
            best = drop[i]
            out.append(i)
    return np.array(out, dtype=int)


def budgets(c: dict, front: np.ndarray, k: int, max_drop: float, lo: float | None = None,
            hi: float | None = None) -> list[float]:
    """K footprint budgets, log-spaced from the smallest front point within `max_drop` (or `lo`) up to the
    smallest one predicted nearly lossless (or `hi`)."""
    foot, drop = c["footprint"][front], c["drop"][front]
    ok = drop <= max_drop
    if lo is None:
        if not ok.any():
            return [float(foot[np.argmin(drop)])]
        lo = foot[ok].min()
    lossless = drop <= NEARLY_LOSSLESS
    hi = max(lo, hi if hi is not None else foot[lossless].min() if lossless.any() else foot.max())
    return [float(b) for b in (np.geomspace(lo, hi, k) if k > 1 else [lo])]


def smallest_within(items, accuracy, floor: float) -> int:
    """The index of the first of `items` (ordered by footprint, accuracy rising with it) whose `accuracy` is at
    least `floor`, by bisection; the last index when none is."""
    a, b = 0, len(items) - 1  # invariant: items[b] passes (or nothing does), items[a - 1] fails
    if accuracy(items[b]) < floor:
        return b
    while a < b:
        mid = (a + b) // 2
        if accuracy(items[mid]) >= floor:
            b = mid
        else:
            a = mid + 1
    return b


def _highest(weights: list[dict], acts: list[dict]) -> tuple[int, int]:
    """The weight and activation plans with every precision at its highest listed value."""
    return (max(range(len(weights)), key=lambda i: sum(weights[i].values())),
            max(range(len(acts)), key=lambda i: sum(acts[i].values())))


def anchor(c: dict, weights: list[dict], acts: list[dict], screen, floor: float) -> int | None:
    """NNCF's corner: every precision at the highest value the space lists (8 bits, for most), pruned as far as
    the screen stays at `floor`: the smallest such structure, found by bisection; None when even the largest
    structure screens below it."""
    w, a = _highest(weights, acts)
    idx = np.flatnonzero((c["index"][:, 1] == w) & (c["index"][:, 2] == a))
    if not len(idx):
        return None
    idx = idx[np.argsort(c["footprint"][idx], kind="stable")]
    i = int(idx[smallest_within(idx, screen, floor)])
    return i if screen(i) >= floor else None


def sibling(c: dict, i: int, weights: list[dict], acts: list[dict], screen, lossless: float,
            ceiling: float) -> int | None:
    """Candidate `i`'s structure at the smallest precision plan whose screen stays within `lossless` of that
    structure at its highest precisions (bisection over the structure's own predicted front); None when that
    is no larger than `i`. Run after `i` with no QAT (post-training quantization), it reuses `i`'s pruned,
    fine-tuned model from the step cache: a front point in seconds, above `i`'s low-bit one."""
    s = c["index"][i, 0]
    w, a = _highest(weights, acts)
    idx = np.flatnonzero(c["index"][:, 0] == s)
    top = idx[(c["index"][idx, 1] == w) & (c["index"][idx, 2] == a)]
    if not len(top):
        return None
    top = int(top[0])
    front = idx[predicted_front({"footprint": c["footprint"][idx], "drop": c["drop"][idx]}, ceiling)]
    items = [int(j) for j in front if c["footprint"][j] < c["footprint"][top]] + [top]
    j = items[smallest_within(items, screen, screen(top) - lossless)]
    return j if c["footprint"][j] > c["footprint"][i] else None


def spread(c: dict, front: np.ndarray, k: int, max_drop: float, screen=None, per_budget: int = 1,
           key=None, reference: float | None = None, lossless: float | None = None) -> list[int]:
    """One candidate per budget: of the `per_budget` least predicted drops that fit it (the first is the
    predicted front's point there), the best `screen` accuracy (built without training, measured) when given.
    `key(i)` names a candidate's pipeline: two that run the same pipeline are one point.

    With a screen and the base's `reference` accuracy, the smallest budget is measured rather than predicted
    (the additive prediction misses how pruning, low-bit weights and low-bit maps compound): a bisection over
    the predicted front finds the smallest footprint whose predicted-best candidate keeps its screened drop
    within `max_drop`. With `lossless` too, so is the largest: the smallest footprint whose predicted-best
    candidate screens within `lossless` (that point needs no training), so the budgets that train sit below
    it. Each bisection step screens one candidate; the K budgets screen `per_budget` each."""
    foot, drop = c["footprint"], c["drop"]
    key = key or (lambda i: i)
    order = np.argsort(drop, kind="stable")  # every candidate, least predicted drop first

    def top(budget: float, taken: set) -> list[int]:
        out, names = [], set()
        for i in order[foot[order] <= budget * (1 + 1e-9)]:
            name = key(int(i))
            if name not in taken and name not in names:
                out.append(int(i))
                names.add(name)
                if len(out) == per_budget:
                    break
        return out

    def best(budget: float, taken: set) -> int | None:
        cands = top(budget, taken)
        if not cands:
            return None
        return cands[0] if screen is None or len(cands) == 1 else max(cands, key=screen)

    def first(budget: float) -> float:  # a bisection step screens the predicted best alone: one build, not 4
        return screen(top(budget, set())[0])

    lo = hi = None
    if screen is not None and reference is not None and per_budget > 1:
        sizes = np.unique(foot[front])
        lo = float(sizes[smallest_within(sizes, first, reference - max_drop)])
        if lossless is not None:
            upper = sizes[sizes >= lo]
            at = smallest_within(upper, first, reference - lossless)
            hi = float(upper[at]) if first(upper[at]) >= reference - lossless else None
    picks: list[int] = []
    taken: set = set()
    for budget in budgets(c, front, k, max_drop, lo, hi):
        i = best(budget, taken)
        if i is not None:
            picks.append(i)
            taken.add(key(i))
    return picks


def build(space, base: nn.Module, params: dict, probe: Probe) -> nn.Module:
    """A point of the space without training: its prune steps zero-shot, BN statistics re-estimated, then
    post-training quantization as its quantize step plans it (activation ranges on `probe.bn_images`)."""
    pipeline = space.pipeline({**params, "finetune_epochs": 0, "quant_epochs": 0, "channel_epochs": 0})
    model = _pruned(base, _zero_shot_steps(pipeline)).to(probe.device)
    if probe.bn_images:
        probe.recalibrate(model)
    if pipeline.steps[-1].kind == "quantize":
        q = pipeline.steps[-1].config
        quantize_(model, q.model_copy(update={"calibration_images": max(1, probe.bn_images)}), probe.data)
    return model


def screen(space, base: nn.Module, params: dict, probe: Probe) -> float:
    """The cheap low-fidelity estimate of a point: validation-subset accuracy of `build` (seconds)."""
    return probe.accuracy(build(space, base, params, probe), recalibrate=False)


class Screen:
    """`screen` of any point of a space, with its base and probe loaded once: what the automatic start
    measures its candidates with, and what a study's veto (`Veto`) measures each sampler proposal with, so
    the two are comparable."""

    def __init__(self, space, data_dir=None, device="cpu"):
        from ..checkpoint import load_model

        self.space = space
        self.base, self.ckpt = load_model(space.base, device)
        self.base.eval()
        train, val = split_validation(load_split(self.ckpt.dataset, "train", data_dir), space.val_size)
        opts = space.sampler.auto
        self.probe = Probe(train, val, self.ckpt.normalization, opts.images, opts.bn_images, device)

    def __call__(self, params: dict) -> float:
        with torch.no_grad():
            return screen(self.space, self.base, params, self.probe)

    def with_footprint(self, params: dict) -> tuple[float, int]:
        """(screened accuracy, total footprint bits of the built point: what the trial's model will measure)."""
        with torch.no_grad():
            model = build(self.space, self.base, params, self.probe)
            acc = self.probe.accuracy(model, recalibrate=False)
        return acc, measure(model.cpu(), act_bits=self.space.pipeline(params).act_bits).total_bits


class Veto:
    """Each sampler proposal screened before it trains (seconds), and not trained when a finished, screened
    trial screened more than `sampler.veto` points higher and either has no larger footprint (the proposal is
    predicted dominated) or is larger and fell below the accuracy floor all the same (predicted infeasible):
    the screen ranks fine-tuned accuracies with Spearman rho 0.94-0.98 (docs/studies.md). The base loads on
    first use."""

    def __init__(self, space, data_dir=None, device="cpu"):
        self.space, self.where, self.screen = space, (data_dir, device), None
        self.margin = space.sampler.veto / 100

    def accuracy(self, params: dict) -> float:
        """The screened accuracy of a point (what the follow-ups pick descent candidates by)."""
        self.screen = self.screen or Screen(self.space, *self.where)
        return self.screen(params)

    def __call__(self, trials, params: dict) -> dict:
        """{'screen_acc', 'screen_footprint_bits'[, 'vetoed_by': trial number]}; {} for a point with no
        zero-shot form (a method that needs training to prune)."""
        self.screen = self.screen or Screen(self.space, *self.where)
        try:
            acc, bits = self.screen.with_footprint(params)
        except OrchestratorError:
            return {}
        out = {"screen_acc": acc, "screen_footprint_bits": bits}
        for t in trials:
            a = t.user_attrs
            if (t.state.name != "COMPLETE" or "duplicate_of" in a or "screen_acc" not in a
                    or a["screen_acc"] < acc + self.margin):
                continue
            if a.get("total_bits", math.inf) <= bits:
                return {**out, "vetoed_by": t.number, "veto_reason": "dominated"}
            if not feasible(t):
                return {**out, "vetoed_by": t.number, "veto_reason": "infeasible"}
        return out


def _with_siblings(space, c: dict, entries: list, lossless: set, plans: Plans, screen, name, ceiling) -> list:
    """`entries` ([(candidate, params)]) with each trained point followed by its `sibling` at the least QAT the
    space lists, while the budget has room."""
    listed = space.params().get("quant_epochs")
    if not isinstance(listed, list) or len(listed) < 2:
        return entries
    out, names = [], {name(i) for i, _ in entries}
    room = space.budget.trials - len(entries)
    for i, params in entries:
        out.append((i, params))
        j = None if i in lossless or room <= 0 else sibling(
            c, i, plans.weights, plans.acts, screen, space.sampler.auto.lossless, ceiling)
        if j is not None and name(j) not in names:
            out.append((j, {**point(c, j), "quant_epochs": min(listed)}))
            names.add(name(j))
            room -= 1
    return out


def point(c: dict, i: int) -> dict:
    s, w, a = c["index"][i]
    return {**c["fixed"], **c["structures"][s], **c["weights"][w], **c["acts"][a]}


def least_training(space, params: dict) -> dict:
    """`params` with each epochs dimension at the least value the space lists."""
    listed = space.params()
    return {**params, **{k: min(listed[k]) for k in TRAINING if k in params and isinstance(listed.get(k), list)}}


def default_points(space) -> int:
    return space.sampler.auto.points or max(1, min(5, space.budget.trials // 3))


def cache_key(space, base_path, data_dir) -> str:
    st = Path(base_path).stat()
    ident = {"version": 5, "base": str(Path(base_path).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
             "data_dir": str(resolve_data_dir(data_dir).resolve()), "val_size": space.val_size,
             "auto": space.sampler.auto.model_dump(include={"images", "bn_images"}),
             "quantize": space.quantize.model_dump()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def auto_start(space, data_dir=None, cache_dir=None, device="cpu", log=None) -> dict:
    """The start points of `space` on its base: {'points': [params], 'predicted': [...], 'table': ...}."""
    k = default_points(space)
    if k > space.budget.trials:
        raise OrchestratorError(f"sampler.auto.points={k} is more than budget.trials={space.budget.trials}: "
                                "every start point is a trial")
    screener = Screen(space, data_dir, device)
    base, ckpt, probe = screener.base, screener.ckpt, screener.probe
    cache = Path(cache_dir) / f"sensitivity-{cache_key(space, space.base, data_dir)}.json" if cache_dir else None
    with torch.no_grad():
        plans = Plans(space, base)
        table = sensitivity_table(space, base, probe, plans, cache)
        c = candidates(space, base.cpu(), table, plans)
    ceiling = table["baseline"] - 1.0 / ckpt.num_classes
    front = predicted_front(c, ceiling)
    screened: dict[int, float] = {}

    def measured(i: int) -> float:
        if i not in screened:
            screened[i] = screener(point(c, i))
        return screened[i]

    def name(i: int) -> str:  # two candidates that run the same pipeline are one point
        return json.dumps(space.pipeline(point(c, i)).model_dump(mode="json"), sort_keys=True)

    opts = space.sampler.auto
    with torch.no_grad():
        picks = spread(c, front, k, opts.max_drop, measured if opts.screen else None, max(1, opts.screen),
                       key=name, reference=table["baseline"], lossless=opts.lossless)
        top = anchor(c, plans.weights, plans.acts, measured, table["baseline"] - opts.lossless) if opts.screen else None
    picks = picks[::-1]  # the largest first: a timeout cuts the most aggressive points, the least likely feasible
    if top is not None and len(picks) < space.budget.trials and name(top) not in {name(i) for i in picks}:
        picks.insert(0, top)  # one more start point, a free one (it runs the least training, below): first
    lossless = {i for i in picks if i in screened and screened[i] >= table["baseline"] - opts.lossless}
    entries = [(i, least_training(space, point(c, i)) if i in lossless else point(c, i)) for i in picks]
    if opts.siblings and opts.screen:
        with torch.no_grad():
            entries = _with_siblings(space, c, entries, lossless, plans, measured, name, ceiling)
    predicted = [{"params": params, "footprint_bits": int(c["footprint"][i]),
                  "predicted_drop": round(float(min(c["drop"][i], ceiling)), 4),
                  **({"screen_acc": screened[i]} if i in screened else {})} for i, params in entries]
    if log:
        for p in predicted:
            shown = f", screened {100 * p['screen_acc']:.1f}%" if "screen_acc" in p else ""
            log(f"auto start point: {p['footprint_bits'] / 8:,.0f} B, predicted zero-shot drop "
                f"{100 * p['predicted_drop']:.1f} points{shown}: {p['params']}")
    below = reserve(c, front, min(c["footprint"][i] for i in picks), ceiling) if picks else []
    return {"points": [p["params"] for p in predicted], "predicted": predicted, "baseline": table["baseline"],
            "front_size": int(len(front)), "combinations": int(len(c["drop"])), "screened": len(screened),
            "reserve": below}


def reserve(c: dict, front: np.ndarray, smallest: float, ceiling: float, most: int = 48) -> list[dict]:
    """The predicted front below the smallest start point, at most `most` points log-spaced in footprint
    (largest first): what the study descends into while its smallest measured point stays feasible
    (`followup`). Every point costs nothing to keep: it is trained only if proposed."""
    idx = [int(i) for i in front[::-1] if c["footprint"][i] < smallest]
    if len(idx) > most:
        logs = np.log(c["footprint"][idx].astype(float))
        marks = np.linspace(logs[0], logs[-1], most)
        idx = list(dict.fromkeys(idx[int(np.argmin(np.abs(logs - m)))] for m in marks))
    return [{"params": point(c, i), "footprint_bits": int(c["footprint"][i]),
             "predicted_drop": round(float(min(c["drop"][i], ceiling)), 4)} for i in idx]
