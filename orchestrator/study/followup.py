"""Follow-ups of the automatic start points: what a study trains next from what its start points measured.

The start points are spread before anything is trained, from a zero-shot screen whose *level* does not carry
across models (ResNet-56, run 18: a point screened at 38.6% trained to 84.46%; every trained start point
stayed feasible, the smallest 2.4 points above the floor, so the front stopped 1.7x above the 40x target).
Two moves use the trained results, one trial at a time, before the sampler proposes anything:

- *Descent* (a line search along the predicted front): while the smallest trained start (or descent) point is
  feasible with room to spare, the predicted-front point nearest below the footprint that a fit of accuracy
  against log footprint over the smallest trained points puts halfway between it and the floor (a step of
  0.5-0.9x), the best screened of the closest few. It stops at the first infeasible point or at `descend`.
- *Promotion* (successive halving's move from a cheap fidelity to the next): the smallest trained front point
  not yet promoted is trained again with each of its epochs dimensions at the next larger listed value. Up
  to `promote` of them, after the descent.

Each is enqueued with `proposed_by` ("descent", "promotion") and the trial it follows (`follows`).
"""

from __future__ import annotations

import math

import numpy as np

from .pareto import feasible, ran, rows

RESERVE_ATTR = "descent_reserve"  # study attribute: the predicted front below the start points (autostart.reserve)
FOLLOWED = ("auto", "descent", "promotion")  # the proposals a follow-up waits for and learns from
TRAINING = ("finetune_epochs", "quant_epochs")  # the epochs a promotion raises


def _trained(t) -> bool:
    return ran(t) and t.user_attrs.get("proposed_by") in FOLLOWED and t.params.get("finetune_epochs", 0) > 0


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
    """After every finished trial (a study callback): enqueue the next descent or promotion point when no
    start or follow-up point is waiting or running. `screen(params)` (or None) picks among descent candidates."""

    def __init__(self, space, screen=None):
        self.space, self.screen = space, screen
        self.opts = space.sampler.auto
        self.listed = space.params()

    def __call__(self, study, _trial=None) -> dict | None:
        """The point enqueued ({'params', 'proposed_by', ...}), or None."""
        trials = study.get_trials(deepcopy=False)
        if self.space.constraints.max_accuracy_drop is None or not any(
                t.user_attrs.get("proposed_by") == "auto" for t in trials):
            return None  # no floor to descend to, or no automatic start points to follow
        if any(t.state.name in ("WAITING", "RUNNING") and t.user_attrs.get("proposed_by") in FOLLOWED
               for t in trials):
            return None
        ran_params = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials  # waiting: not yet params
                      if t.state.name in ("COMPLETE", "WAITING", "RUNNING")]
        point = self.descent(study, trials, ran_params) or self.promotion(study, trials, ran_params)
        if point is not None:
            study.enqueue_trial(point["params"], user_attrs={k: v for k, v in point.items() if k != "params"})
        return point

    def descent(self, study, trials, ran_params) -> dict | None:
        done = [t for t in trials if t.user_attrs.get("proposed_by") == "descent" and ran(t)]
        if len(done) >= self.opts.descend or any(not feasible(t) for t in done):
            return None
        trained = sorted((t for t in trials if _trained(t)), key=lambda t: t.user_attrs["total_bits"])
        if not trained or not feasible(trained[0]):
            return None
        low = trained[0].user_attrs
        floor = low["base_val_acc"] - self.space.constraints.max_accuracy_drop
        if low["val_acc"] - floor < self.space.constraints.max_accuracy_drop / 5:
            return None  # within a fifth of the floor: a smaller point would most likely fall below it
        points = [(t.user_attrs["total_bits"], t.user_attrs["val_acc"]) for t in trained]
        target = low["total_bits"] * step_factor(points, floor)
        near = [p for p in study.user_attrs.get(RESERVE_ATTR, []) if target * 0.85 <= p["predicted_footprint_bits"] <= target
                and p["params"] not in ran_params][:max(1, self.opts.screen)]
        if not near:
            near = [p for p in study.user_attrs.get(RESERVE_ATTR, []) if p["predicted_footprint_bits"] <= target
                    and p["params"] not in ran_params][:1]
        if not near:
            return None
        if self.screen is not None and len(near) > 1:
            scored = [{**p, "screen_acc": self.screen(p["params"])} for p in near]
            best = max(scored, key=lambda p: p["screen_acc"])
        else:
            best = near[0]
        return {**best, "follows": trained[0].number}

    def promotion(self, study, trials, ran_params) -> dict | None:
        done = [t for t in trials if t.user_attrs.get("proposed_by") == "promotion" and ran(t)]
        if len(done) >= self.opts.promote:
            return None
        front = {r["trial"] for r in rows(study) if r["pareto"]}
        for t in sorted((t for t in trials if t.number in front and _trained(t)),
                        key=lambda t: t.user_attrs["total_bits"]):
            params = self.promoted(t.params)
            if params is not None and params not in ran_params:
                return {"params": params, "proposed_by": "promotion", "follows": t.number}
        return None

    def promoted(self, params: dict) -> dict | None:
        """`params` with every trained epochs dimension at the next larger listed value (None: none is larger)."""
        out = dict(params)
        for k in TRAINING:
            listed, v = self.listed.get(k), params.get(k, 0)
            if not isinstance(listed, list) or not v:
                continue
            larger = [x for x in listed if x > v]
            if not larger:
                return None
            out[k] = min(larger)
        return out if out != params else None
