"""Follow-ups of the automatic start points: what a study trains next from what its start points measured.

The start points are spread before anything is trained, from a zero-shot screen whose *level* does not carry
across models (ResNet-56, run 18: a point screened at 38.6% trained to 84.46%; every trained start point
stayed feasible, the smallest 2.4 points above the floor, so the front stopped 1.7x above the 40x target).
Two moves use the measured results, one trial at a time, ahead of the sampler (with one worker: before it
proposes anything):

- *Descent* (a line search along the predicted front): while the smallest start or follow-up point is
  feasible with room to spare, the predicted-front point nearest below the footprint that a fit of accuracy
  against log footprint over the smallest measured points puts halfway between it and the floor (a step of
  0.5-0.9x), the best screened of the closest few. It stops at the first infeasible (or failed) point or at
  `descend`.
- *Promotion* (successive halving's move from a cheap fidelity to the next): the smallest front point of
  those not yet promoted is trained again with each epochs dimension it trained at the next larger listed
  value. Up to `promote` of them, after the descent.

Each is enqueued with `proposed_by` ("descent", "promotion") and the trial it follows (`follows`). Workers
that finish trials at once may both propose the same point: the enqueue skips a point the study already
holds (Optuna's check; a race of milliseconds remains, as Optuna documents).
"""

from __future__ import annotations

import json
import math

import numpy as np

from .pareto import failed_own, feasible, ran, rows

RESERVE_ATTR = "descent_reserve"  # study attribute: the predicted front below the start points (autostart.reserve)
FOLLOWED = ("auto", "descent", "promotion")  # the proposals a follow-up waits for and learns from
TRAINING = ("finetune_epochs", "quant_epochs", "channel_epochs")  # the epochs a promotion raises


def _by(t) -> str | None:
    return t.user_attrs.get("proposed_by")


def _key(params: dict) -> str:
    """Params compared as the space rounds them (a sampler's 0.9000000000000001 is the grid's 0.9)."""
    return json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in params.items()}, sort_keys=True)


def enqueue(study, point: dict) -> None:
    """A proposed point ({'params', 'proposed_by', ...}) as a waiting trial, its other keys as user attributes;
    skipped when the study already holds those params (workers proposing at once)."""
    study.enqueue_trial(point["params"], user_attrs={k: v for k, v in point.items() if k != "params"},
                        skip_if_exists=True)


def step_factor(points: list[tuple[float, float]], floor: float) -> float:
    """How far below the smallest of `points` ((footprint bits, validation accuracy), smallest first) to go:
    the footprint where the least-squares line of accuracy against log footprint through the (up to 3)
    smallest crosses halfway from the smallest's accuracy to `floor`, as a factor of its footprint, in
    0.5-0.9 (0.75 when the points show no slope)."""
    bits, acc = points[0]
    xs = np.log([b for b, _ in points[:3]])
    ys = np.array([a for _, a in points[:3]])
    slope = float(np.polyfit(xs, ys, 1)[0]) if len(points) > 1 and np.ptp(xs) > 0 else 0.0
    if slope <= 0:
        return 0.75
    return float(np.clip(math.exp(-(acc - floor) / 2 / slope), 0.5, 0.9))


class FollowUp:
    """After every finished trial (a study callback): the next descent or promotion point, when no automatic
    start or follow-up point is waiting or running. `screen(params)` (or None) measures descent candidates."""

    def __init__(self, space, screen=None):
        self.space, self.screen = space, screen
        self.opts = space.sampler.auto
        self.listed = space.params()

    def __call__(self, study, _trial=None) -> dict | None:
        """The point enqueued ({'params', 'proposed_by', ...}), or None."""
        point = self.propose(study)
        if point is not None:
            enqueue(study, point)
        return point

    def propose(self, study) -> dict | None:
        trials = study.get_trials(deepcopy=False)
        if self.space.constraints.max_accuracy_drop is None or not any(_by(t) == "auto" for t in trials):
            return None  # no floor to descend to, or no automatic start points to follow
        if any(t.state.name in ("WAITING", "RUNNING") and _by(t) in FOLLOWED for t in trials):
            return None
        tried = {_key(t.params or t.system_attrs.get("fixed_params", {})) for t in trials  # waiting: no params yet
                 if t.state.name in ("COMPLETE", "WAITING", "RUNNING") or failed_own(t)}
        # smallest first; of two at one footprint (a promotion and its original), the more accurate
        measured = sorted((t for t in trials if ran(t) and _by(t) in FOLLOWED),
                          key=lambda t: (t.user_attrs["total_bits"], -t.user_attrs["val_acc"]))
        return self.descent(study, trials, measured, tried) or self.promotion(study, trials, measured, tried)

    def descent(self, study, trials, measured, tried) -> dict | None:
        done = [t for t in trials if _by(t) == "descent" and (ran(t) or failed_own(t))]
        if len(done) >= self.opts.descend or any(failed_own(t) or not feasible(t) for t in done):
            return None
        if not measured or not feasible(measured[0]):
            return None
        low, limit = measured[0].user_attrs, self.space.constraints.max_accuracy_drop
        floor = low["base_val_acc"] - limit
        if low["val_acc"] - floor < limit / 5:
            return None  # within a fifth of the floor: a smaller point would most likely fall below it
        target = low["total_bits"] * step_factor([(t.user_attrs["total_bits"], t.user_attrs["val_acc"])
                                                  for t in measured], floor)
        reserve = [p for p in study.user_attrs.get(RESERVE_ATTR, []) if _key(p["params"]) not in tried]
        near = [p for p in reserve if target * 0.85 <= p["predicted_footprint_bits"] <= target]
        near = near[:max(1, self.opts.screen)] or [p for p in reserve if p["predicted_footprint_bits"] <= target][:1]
        if not near:
            return None
        if self.screen is not None:  # recorded even for one: a later sampler proposal is vetoed against it
            near = [{**p, "screen_acc": self.screen(p["params"])} for p in near]
        best = max(near, key=lambda p: p.get("screen_acc", 0.0))  # the largest first: ties keep it
        return {**best, "follows": measured[0].number}

    def promotion(self, study, trials, measured, tried) -> dict | None:
        done = [t for t in trials if _by(t) == "promotion" and (ran(t) or failed_own(t))]
        if len(done) >= self.opts.promote:
            return None
        front = {r["trial"] for r in rows(study) if r["pareto"]}
        for t in (t for t in measured if t.number in front):
            params = self.promoted(t.params)
            if params is not None and _key(params) not in tried:
                return {"params": params, "proposed_by": "promotion", "follows": t.number}
        return None

    def promoted(self, params: dict) -> dict | None:
        """`params` with every epochs dimension it trained (> 0) at the next larger listed value, where one is
        listed; None when none is (a range of epochs is not promoted: no next value)."""
        out = dict(params)
        for k in TRAINING:
            listed, v = self.listed.get(k), params.get(k, 0)
            if isinstance(listed, list) and v and any(x > v for x in listed):
                out[k] = min(x for x in listed if x > v)
        return out if out != params else None
