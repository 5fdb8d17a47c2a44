"""Follow-ups of the automatic start points: the descent along the predicted front and the promotions."""

import math

import numpy as np
import optuna
import pytest

from conftest import space_file
from orchestrator.study import load_space
from orchestrator.study.followup import RESERVE_ATTR, FollowUp, step_factor

DIMS = {"method": ["global_magnitude"], "ratio": {"low": 0.3, "high": 0.9, "step": 0.1},
        "finetune_epochs": [0.5, 1, 0], "quant_epochs": [0.5, 1, 0], "kd": [True], "bits": [8, 4], "act_bits": [8]}
BASE_VAL = 0.80  # validation accuracy of the base (fraction); the floor is 5 points below: 0.75


def _space(tmp_path, base, **auto):
    return load_space(space_file(tmp_path, base, dimensions=DIMS, constraints={"max_accuracy_drop": 0.05},
                                 sampler={"name": "tpe", "veto": None, "auto": {"points": 2, **auto}},
                                 budget={"trials": 20}))


def _params(ratio, epochs=0.5, q=0.5, bits=4):
    return {"method": "global_magnitude", "ratio": ratio, "finetune_epochs": epochs, "quant_epochs": q, "kd": True,
            "bits": bits, "act_bits": 8}


def _study(space, reserve):
    study = optuna.create_study(directions=space.directions())
    study.set_user_attr(RESERVE_ATTR, reserve)
    return study


def _add(study, space, params, kbytes, val, by="auto"):
    """A finished trial: `kbytes` footprint, `val` validation accuracy, the floor as its constraint."""
    dists = {k: optuna.distributions.CategoricalDistribution(v) if isinstance(v, list) else
             optuna.distributions.FloatDistribution(v.low, v.high, step=v.step) for k, v in space.suggested().items()}
    bits = kbytes * 8000
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={k: dists[k] for k in params}, values=[val, bits / 8],
        user_attrs={"proposed_by": by, "total_bits": bits, "val_acc": val, "base_val_acc": BASE_VAL},
        constraints={"accuracy_drop": (BASE_VAL - val) - 0.05}))


def _reserve(*kbytes):
    return [{"params": _params([0.9, 0.8, 0.7, 0.6, 0.5, 0.4][i], bits=8),  # trials below run 4 bits: distinct
             "proposed_by": "descent", "predicted_drop": 0.1, "predicted_footprint_bits": int(k * 8000)}
            for i, k in enumerate(kbytes)]


def test_the_step_goes_halfway_to_the_floor_along_the_fitted_line():
    """Accuracy rising 2 points per e-fold of footprint, 3 points above the floor: halfway is 1.5 points, i.e.
    0.75 e-folds down, a factor exp(-0.75) = 0.47, clipped to 0.5; 1 point above: exp(-0.25) = 0.78."""
    line = [(100 * math.exp(x), 0.78 + 0.02 * x) for x in (0.0, 0.5, 1.0)]
    assert step_factor(line, 0.75) == pytest.approx(0.5)
    line1 = [(b, a - 0.02) for b, a in line]
    assert step_factor(line1, 0.75) == pytest.approx(math.exp(-0.25))
    assert step_factor([(100.0, 0.79)], 0.75) == 0.75  # one point: no slope known
    assert step_factor([(100.0, 0.79), (200.0, 0.70)], 0.75) == 0.75  # accuracy falling with size: no trust


def test_descent_waits_for_the_start_points_then_goes_below_the_smallest_and_stops_at_the_floor(base, tmp_path):
    space = _space(tmp_path, base)
    study = _study(space, _reserve(90, 70, 60, 50, 40, 30))
    follow = FollowUp(space)
    study.enqueue_trial(_params(0.3), user_attrs={"proposed_by": "auto"})
    _add(study, space, _params(0.5), 200, 0.795)
    assert follow(study) is None  # a start point still waits: nothing follows yet
    for t in study.get_trials():  # the waiting start point ran (failed, say)
        if t.state.name == "WAITING":
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    _add(study, space, _params(0.7), 100, 0.785)
    point = follow(study)
    # fit over (200 KB, 79.5%), (100 KB, 78.5%): 1.44 points per e-fold; halfway to the floor (75%) is 1.75 points
    # down: exp(-1.75 / 1.44) = 0.30, clipped to 0.5: 50 KB; the candidates within 0.85-1x of it: 50 KB
    assert point["proposed_by"] == "descent" and point["follows"] == 2
    assert point["predicted_footprint_bits"] == 50 * 8000 and point["params"] == _reserve(90, 70, 60, 50)[3]["params"]
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [point["params"]] and waiting[0].user_attrs["proposed_by"] == "descent"
    assert follow(study) is None  # it is waiting: nothing more until it ran
    study._storage.set_trial_state_values(waiting[0]._trial_id, optuna.trial.TrialState.FAIL)
    _add(study, space, point["params"], 50, 0.74, by="descent")  # below the floor: the descent stops
    assert follow(study) == {"params": _params(0.7, epochs=1, q=1), "proposed_by": "promotion", "follows": 2}
    # (no second descent: the smallest trained feasible point is promoted instead)


def test_no_descent_within_a_fifth_of_the_floor_and_at_most_descend_points(base, tmp_path):
    space = _space(tmp_path, base)
    study = _study(space, _reserve(90, 80, 70, 60, 50, 40))
    _add(study, space, _params(0.5), 100, 0.755)  # 0.5 points above a 5-point floor: less than a fifth
    assert FollowUp(space)(study)["proposed_by"] == "promotion"  # no descent; the point is trained again instead
    capped = _space(tmp_path, base, descend=1, promote=0)
    study = _study(capped, _reserve(90, 80, 70, 60, 50, 40))
    _add(study, capped, _params(0.5), 100, 0.79)
    first = FollowUp(capped).propose(study)
    assert first["proposed_by"] == "descent"
    _add(study, capped, first["params"], first["predicted_footprint_bits"] / 8000, 0.785, by="descent")
    assert FollowUp(capped)(study) is None  # one descent, feasible with room, but descend=1


def test_the_descent_stops_at_its_first_infeasible_or_failed_point(base, tmp_path):
    """Even when a smaller point stays feasible (noise), a descent that once fell below the floor, or failed,
    proposes nothing more; a failed point is never proposed again."""
    space = _space(tmp_path, base, promote=0)
    reserve = _reserve(90, 80, 70, 60, 50, 40)
    study = _study(space, reserve)
    _add(study, space, _params(0.5), 100, 0.79)
    _add(study, space, reserve[0]["params"], 120, 0.70, by="descent")  # infeasible, above a feasible point
    assert FollowUp(space)(study) is None
    study = _study(space, reserve)
    _add(study, space, _params(0.5), 100, 0.79)
    point = FollowUp(space).propose(study)
    study.add_trial(optuna.trial.create_trial(  # it ran and failed (not a lost worker): attempted
        state=optuna.trial.TrialState.FAIL, params=point["params"],
        distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in point["params"].items()},
        user_attrs={"proposed_by": "descent", "fail_reason": "RuntimeError: boom"}))
    assert FollowUp(space)(study) is None


def test_reserve_keeps_the_predicted_front_below_the_smallest_start_point_log_spaced():
    from orchestrator.study.autostart import reserve

    n = 200
    c = {"footprint": np.geomspace(1e4, 1e6, n), "drop": np.linspace(0.9, 0.0, n),
         "index": np.zeros((n, 3), dtype=int), "fixed": {}, "structures": [{}], "weights": [{}], "acts": [{}]}
    front = np.arange(n)
    kept = reserve(c, front, smallest=float(c["footprint"][150]), ceiling=0.8)
    sizes = [p["footprint_bits"] for p in kept]
    assert 40 <= len(kept) <= 48 and sizes == sorted(sizes, reverse=True)  # largest first, thinned
    assert sizes[0] == int(c["footprint"][149]) and sizes[-1] == int(c["footprint"][0])  # both ends kept
    steps = -np.diff(np.log(sizes))
    assert steps.max() < 2 * steps.mean()  # log-spaced: no gap much wider than the average step
    assert max(p["predicted_drop"] for p in kept) == 0.8  # capped at the ceiling (chance)
    assert reserve(c, front, smallest=float(c["footprint"][0]), ceiling=0.8) == []  # nothing below the smallest


def test_promotion_trains_the_smallest_front_point_again_at_the_next_listed_epochs(base, tmp_path):
    space = _space(tmp_path, base, descend=0, promote=1)
    study = _study(space, [])
    _add(study, space, _params(0.5), 200, 0.79)
    _add(study, space, _params(0.7), 100, 0.78)
    _add(study, space, _params(0.8, epochs=0, q=0), 90, 0.60)  # below the floor: off the front
    _add(study, space, _params(0.6), 80, 0.77, by="sampler")  # the smallest front point, a sampler's: not promoted
    follow = FollowUp(space)
    point = follow(study)
    assert point == {"params": _params(0.7, epochs=1, q=1), "proposed_by": "promotion", "follows": 1}
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    study._storage.set_trial_state_values(waiting[0]._trial_id, optuna.trial.TrialState.FAIL)
    _add(study, space, point["params"], 100, 0.785, by="promotion")
    assert follow(study) is None  # promote=1 reached
    assert follow.promoted(_params(0.7, epochs=1, q=1)) is None  # nothing listed above 1 epoch
    assert follow.promoted(_params(0.7, epochs=0.5, q=0)) == _params(0.7, epochs=1, q=0)  # PTQ stays PTQ


def test_a_study_without_automatic_start_points_gets_no_follow_up(base, tmp_path):
    space = _space(tmp_path, base)
    study = _study(space, _reserve(90, 80))
    _add(study, space, _params(0.5), 200, 0.795, by="start")  # hand-written start points
    _add(study, space, _params(0.7), 100, 0.79, by="start")
    assert FollowUp(space)(study) is None


def test_a_study_runs_its_follow_ups_right_after_its_start_points(base, cifar10_dir, in_tmp, monkeypatch):
    """Through `study run`: with room above the floor, descent points (each below the smallest trained point it
    follows) and then promotions (the followed trial's configuration at the next listed epochs) run before
    the sampler proposes anything, each recorded with how it was proposed and the trial it follows."""
    from conftest import run
    from orchestrator.study import autostart

    # an untrained base predicts no drop anywhere (a one-point front): every candidate counts as the front here,
    # and the largest is the one start point, so the reserve below it is the rest
    monkeypatch.setattr(autostart, "predicted_front", lambda c, ceiling: np.argsort(c["footprint"], kind="stable"))
    monkeypatch.setattr(autostart, "spread", lambda c, front, *a, **k: [int(front[-1])])
    storage = f"sqlite:///{in_tmp}/o.db"
    path = space_file(in_tmp, base, dimensions={"method": ["global_magnitude"], "ratio": {"low": 0.3, "high": 0.9,
                                                                                         "step": 0.1},
                                                "finetune_epochs": [0.5, 1], "bits": [8, 4, 2], "act_bits": [8]},
                      constraints={"max_accuracy_drop": 0.99},  # a tiny untrained base: every trial is feasible
                      sampler={"name": "tpe", "veto": None,
                               "auto": {"images": 50, "bn_images": 32, "points": 2, "descend": 2, "promote": 1,
                                        "screen": 0}},  # no screen: no anchor, no siblings
                      budget={"trials": 8})
    r = run("study", "run", path, "--storage", storage, "--mlflow", f"sqlite:///{in_tmp}/m.db", "--data-dir",
            cifar10_dir, "--quiet", "--out", in_tmp / "studies")
    assert r.exit_code == 0, r.output
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    by = [t.user_attrs.get("proposed_by", "sampler") for t in trials]
    n_auto = by.count("auto")
    follow = [t for t in trials if t.user_attrs.get("proposed_by") in ("descent", "promotion")]
    assert 1 <= by.count("descent") <= 2 and by.count("promotion") == 1  # descend: 2, promote: 1
    assert [t.number for t in follow] == list(range(n_auto, n_auto + len(follow)))  # right after
    assert by[n_auto:n_auto + len(follow)] == sorted(by[n_auto:n_auto + len(follow)])  # descents, then promotions
    for t in follow:
        followed = trials[t.user_attrs["follows"]]
        assert followed.user_attrs["proposed_by"] in ("auto", "descent") and followed.params["finetune_epochs"] == 0.5
        if t.user_attrs["proposed_by"] == "descent":
            assert t.user_attrs["total_bits"] < followed.user_attrs["total_bits"]
        else:
            assert t.params == {**followed.params, "finetune_epochs": 1}


def test_no_follow_up_is_enqueued_past_the_timeout_or_without_budget_room(base, tmp_path):
    """A point enqueued then would wait in the study for its next run (run 20 left a promotion so)."""
    import logging
    import time

    from orchestrator.study.runner import TrialRunner

    space = _space(tmp_path, base)
    study = _study(space, _reserve(90, 80, 70, 60, 50, 40))
    _add(study, space, _params(0.5), 100, 0.79)
    runner = TrialRunner.__new__(TrialRunner)  # the follow-up's guard alone: no MLflow, no data
    runner.space, runner.follow, runner.log, runner.stopped = space, FollowUp(space), logging.getLogger("t"), []
    runner.duplicates, runner.vetoed, runner.idle_before, runner.most_idle, runner.out_of_time = [], [], 0, 20, False
    for deadline, target in ((time.monotonic() - 1, 20), (None, 1)):  # past the timeout; the budget spent
        runner.deadline, runner.target = deadline, target
        runner.follow_up(study)
        assert not [t for t in study.get_trials() if t.state.name == "WAITING"]
    runner.deadline, runner.target = time.monotonic() + 60, 20
    runner.follow_up(study)
    assert [t.user_attrs["proposed_by"] for t in study.get_trials() if t.state.name == "WAITING"] == ["descent"]
