"""Automatic start points: exact costs, the predicted front, the spread, the cache, and the bad inputs."""

import math

import numpy as np
import pytest

from conftest import one_line_error, run, space_file
from orchestrator.study import load_space
from orchestrator.study import autostart
from orchestrator.study.runner import open_study, start_points

DIMS = {"method": ["global_magnitude", "l1_filter"], "ratio": {"low": 0.3, "high": 0.6, "step": 0.3},
        "finetune_epochs": [0.5, 0], "kd": [True, False], "bits": [8, 4], "group_bits": {"stage1": [4, 2]},
        "act_bits": [8], "group_act_bits": {"stage1": [4, 8]}}
AUTO = {"name": "tpe", "auto": {"images": 50, "bn_images": 32, "points": 3}}


def _space(tmp_path, base, **over):
    return load_space(space_file(tmp_path, base, **{"dimensions": DIMS, "sampler": AUTO, "budget": {"trials": 6},
                                                    **over}))


def test_every_candidate_costs_what_the_real_model_measures(base, cifar10_dir, tmp_path):
    """The solve's footprint of a combination is the footprint of that configuration built for real (its
    prune steps zero-shot, PTQ weights, calibrated activations): exact, bit for bit."""
    import copy

    from orchestrator.checkpoint import load_model
    from orchestrator.data import load_split, split_validation
    from orchestrator.finetune import FinetuneData
    from orchestrator.footprint import measure
    from orchestrator.quant import quantize_

    space = _space(tmp_path, base)
    model, ckpt = load_model(space.base)
    table = {"baseline": 0.5, "prune": {m: {g: {"0.0": 0.0} for g in ("stem", "stage1", "stage2", "stage3",
                                                                         "classifier")} for m in DIMS["method"]},
             "weights": {}, "acts": {}}
    table["weights"] = {g: {str(b): 0.0 for b in (2, 4, 8)} for g in table["prune"]["l1_filter"]}
    table["acts"] = {g: {"4": 0.0, "8": 0.0} for g in table["prune"]["l1_filter"]}
    c = autostart.candidates(space, model, table, autostart.Plans(space, model))
    assert len(c["footprint"]) == 2 * 2 * 2 * 2 * 2  # method x ratio x bits x bits_stage1 x act_stage1
    train, _ = split_validation(load_split("cifar10", "train", cifar10_dir), space.val_size)
    data = FinetuneData(train=train, normalization=ckpt.normalization)
    for i in (0, 5, 13, 22, 31):
        params = autostart.point(c, i)
        pipeline = space.pipeline({**params, "finetune_epochs": 0, "quant_epochs": 0})
        built = copy.deepcopy(model)
        for cfg in autostart._zero_shot_steps(pipeline):
            built = autostart._pruned(built, [cfg])
        built = quantize_(built, pipeline.steps[-1].config, data)
        assert measure(built, act_bits=pipeline.act_bits).total_bits == c["footprint"][i], params


def test_the_predicted_front_is_non_dominated_and_the_spread_fits_its_budgets():
    rng = np.random.default_rng(0)
    c = {"footprint": rng.integers(1000, 100000, 400).astype(float), "drop": rng.random(400)}
    front = autostart.predicted_front(c, ceiling=0.9)
    f, d = c["footprint"], np.minimum(c["drop"], 0.9)
    for i in front:  # nothing is at least as small and strictly better, or strictly smaller and as good
        assert not np.any((f <= f[i]) & (d < d[i]) | (f < f[i]) & (d <= d[i]))
    assert list(f[front]) == sorted(f[front]) and list(d[front]) == sorted(d[front], reverse=True)
    picks = autostart.spread(c, front, 4, max_drop=0.5)
    budgets = autostart.budgets(c, front, 4, max_drop=0.5)
    assert len(picks) == 4 and len(set(picks)) == 4 and budgets == sorted(budgets)
    for k, (i, budget) in enumerate(zip(picks, budgets)):  # each fits its budget with the least drop left
        fits = [j for j in range(400) if f[j] <= budget and j not in picks[:k]]
        assert f[i] <= budget and d[i] == min(d[j] for j in fits)
    lo = min(f[i] for i in front if d[i] <= 0.5)
    assert f[picks[0]] == lo and picks[-1] in front  # the smallest point within max_drop, the nearly lossless end


def test_with_a_screen_the_smallest_budget_is_the_smallest_that_measures_within_max_drop():
    """The screen's accuracy rises with footprint here; the bisection finds the smallest front footprint whose best
    screened candidate is within max_drop of the reference, and the spread starts there."""
    rng = np.random.default_rng(1)
    c = {"footprint": rng.integers(1000, 100000, 300).astype(float), "drop": rng.random(300) * 0.9}
    front = autostart.predicted_front(c, ceiling=0.9)
    calls = []

    def screen(i):  # a measured accuracy: 0.9 at the largest footprint, falling to 0.1 at the smallest
        calls.append(i)
        return 0.1 + 0.8 * (c["footprint"][i] - 1000) / 99000

    picks = autostart.spread(c, front, 3, 0.4, screen=screen, per_budget=2, reference=0.9)
    assert len(set(calls)) < 60  # a bisection, not a sweep
    sizes = np.unique(c["footprint"][front])
    passing = [f for f in sizes if max(screen(i) for i in np.argsort(c["drop"], kind="stable")
                                       if c["footprint"][i] <= f) >= 0.5]  # best-of-all: an upper bound
    assert c["footprint"][picks[0]] >= min(passing)  # nothing below a footprint where even the best fails
    assert screen(picks[0]) >= 0.5  # the smallest start point measures within max_drop


def test_with_lossless_the_largest_budget_is_the_smallest_that_screens_within_it():
    """Predicted drop falls with footprint to nearly nothing at about 93 KB; the screen reaches the reference
    (0.9) less `lossless` (0.1) at 60 KB. With `lossless` the top budget is that screened point, so every
    budget that trains sits below where training stops paying; without it, the predicted point."""
    foot = np.linspace(1000, 100000, 199)
    c = {"footprint": foot, "drop": 0.9 * (1 - foot / 100000) ** 2}
    front = autostart.predicted_front(c, ceiling=0.9)

    calls = set()

    def screen(i):
        calls.add(i)
        return min(0.9, 0.2 + foot[i] / 100000)

    wide = autostart.spread(c, front, 3, 0.4, screen=screen, per_budget=2, reference=0.9)
    calls.clear()
    picks = autostart.spread(c, front, 3, 0.4, screen=screen, per_budget=2, reference=0.9, lossless=0.1)
    steps = math.ceil(math.log2(len(front))) + 1  # of one bisection over the 199 front footprints
    assert len(calls) <= 2 * steps + 3 * 2  # each bisection step builds one candidate, each budget 2
    assert foot[wide[-1]] > 90000 and len(picks) == 3
    assert screen(picks[-1]) >= 0.8 - 1e-9 and foot[picks[-1]] < 61000  # the first footprint screened within
    assert screen(picks[0]) >= 0.5 - 1e-9 and foot[picks[0]] < 31000  # the smallest within max_drop, as before
    assert foot[picks[0]] < foot[picks[1]] < foot[picks[2]]


def test_the_anchor_is_the_smallest_structure_at_the_highest_precisions_that_screens_within_lossless():
    """4 structures x 2 weight plans x 2 activation plans; the screen rises with footprint. The anchor keeps the
    highest plans (8 bits over 4) and the smallest structure whose screen reaches the floor."""
    weights, acts = [{"bits": 4}, {"bits": 8}], [{"act_bits": 8}, {"act_bits": 4}]
    index = np.array([(s, w, a) for s in range(4) for w in range(2) for a in range(2)])
    foot = np.array([1000.0 * (s + 1) * (w + 1) * (2 - a) for s, w, a in index])
    c = {"index": index, "footprint": foot}
    calls = []

    def screen(i):
        calls.append(i)
        return 0.5 + 0.1 * index[i][0]  # structure 0: 0.5 ... structure 3: 0.8

    i = autostart.anchor(c, weights, acts, screen, floor=0.65)
    assert tuple(index[i]) == (2, 1, 0)  # structure 2 (0.7) is the smallest within; weights 8 bits, maps 8 bits
    assert set(int(index[j][1]) for j in calls) == {1} and set(int(index[j][2]) for j in calls) == {0}
    assert autostart.anchor(c, weights, acts, screen, floor=0.85) is None  # not even the largest structure


def test_the_sibling_is_the_structure_at_its_smallest_plan_screened_within_lossless_of_its_highest():
    """Structure 1's predicted front: 2,000 (4-bit weights, 4-bit maps), 4,000 (8, 4), 8,000 (8, 8: the
    highest). 4-bit weights cost 10 points on the screen, 4-bit maps 0.3: the sibling of the 2,000 point keeps
    8-bit weights and 4-bit maps, unless `lossless` is tighter than 0.3 points."""
    weights, acts = [{"bits": 4}, {"bits": 8}], [{"act_bits": 8}, {"act_bits": 4}]
    index = np.array([(s, w, a) for s in range(4) for w in range(2) for a in range(2)])
    c = {"index": index, "footprint": np.array([1000.0 * (s + 1) * (w + 1) * (2 - a) for s, w, a in index]),
         "drop": np.array([0.1 * (w == 0) + 0.05 * (a == 1) for s, w, a in index])}

    def screen(i):
        return 0.8 - 0.1 * (index[i][1] == 0) - 0.003 * (index[i][2] == 1)

    at = {tuple(int(v) for v in row): i for i, row in enumerate(index)}
    j = autostart.sibling(c, at[1, 0, 1], weights, acts, screen, lossless=0.005, ceiling=0.9)
    assert tuple(index[j]) == (1, 1, 1) and c["footprint"][j] == 4000
    j = autostart.sibling(c, at[1, 0, 1], weights, acts, screen, lossless=0.001, ceiling=0.9)
    assert tuple(index[j]) == (1, 1, 0)  # only the highest plan is within 0.1 points of itself
    assert autostart.sibling(c, at[1, 1, 1], weights, acts, screen, lossless=0.005, ceiling=0.9) is None  # no larger


def test_each_trained_start_point_is_followed_by_its_ptq_sibling(base, cifar10_dir, tmp_path, monkeypatch):
    """With quant_epochs listed, a start point that trains is followed by its structure at the highest
    precisions (the only plan screened within `lossless` here) and no QAT: the same prune steps, so the trial
    reuses the point's pruned, fine-tuned model from the step cache."""
    space = _space(tmp_path, base, dimensions={**DIMS, "quant_epochs": [0.5, 0]})
    highest = {"bits": 8, "bits_stage1": 4, "act_bits": 8, "act_stage1": 8}

    def screen(space, base, params, probe):  # far below the base; each precision under its highest costs 10 points
        return -0.1 * sum(params[k] != v for k, v in highest.items())

    monkeypatch.setattr(autostart, "screen", screen)
    points = autostart.auto_start(space, cifar10_dir, tmp_path / "cache")["points"]
    assert len(points) <= space.budget.trials
    assert all(p["finetune_epochs"] == 0.5 for p in points)  # nothing screened lossless: every point fine-tunes
    siblings = [k for k, p in enumerate(points) if p["quant_epochs"] == 0]
    assert siblings and 0 not in siblings
    for k in siblings:  # right after the trained point whose prune steps it shares, at the highest precisions
        sib, point = points[k], points[k - 1]
        assert point["quant_epochs"] == 0.5 and {n: sib[n] for n in highest} == highest != {n: point[n] for n in highest}
        prunes = [s for s in space.pipeline(sib).steps if s.kind != "quantize"]
        assert prunes == [s for s in space.pipeline(point).steps if s.kind != "quantize"]
    monkeypatch.setattr(space.sampler.auto, "siblings", False)
    assert all(p["quant_epochs"] == 0.5 for p in autostart.auto_start(space, cifar10_dir, tmp_path / "cache")["points"])


def test_auto_start_enqueues_k_points_that_the_study_records_as_auto(base, cifar10_dir, tmp_path, monkeypatch):
    space = _space(tmp_path, base)
    storage = f"sqlite:///{tmp_path}/o.db"
    calls, screening = [], []  # sensitivity measurements (cached), and screens (the zero-shot builds, not cached)
    real, real_screen = autostart.Probe.accuracy, autostart.screen

    def counted(self, *a, **k):
        if not screening:
            calls.append(1)
        return real(self, *a, **k)

    def counted_screen(*a):
        screening.append(1)
        try:
            return real_screen(*a)
        finally:
            screening.pop()

    monkeypatch.setattr(autostart.Probe, "accuracy", counted)
    monkeypatch.setattr(autostart, "screen", counted_screen)
    start = start_points(space, storage, cifar10_dir, tmp_path / "s")
    auto, kept = [p for p in start if not p.get("reserve")], [p for p in start if p.get("reserve")]
    assert 1 <= len(auto) <= 3 and all(p["proposed_by"] == "auto" for p in auto)
    smallest = min(p["predicted_footprint_bits"] for p in auto)  # the reserve: the predicted front below them
    assert all(p["proposed_by"] == "descent" and p["predicted_footprint_bits"] < smallest for p in kept)
    sizes = [p["predicted_footprint_bits"] for p in kept]
    assert sizes == sorted(sizes, reverse=True) and len(kept) <= 48
    params = space.params()
    for p in auto:
        assert set(p["params"]) == set(params)  # every parameter given, each inside its choices
        assert p["params"]["kd"] is True  # the first listed value; epochs too, but for a lossless screen (below)
        assert p["params"]["finetune_epochs"] == 0.5 or ("screen_acc" in p and p["params"]["finetune_epochs"] == 0)
    measured = len(calls)
    assert measured > 0
    again = start_points(space, storage, cifar10_dir, tmp_path / "s")  # the sensitivity table is cached
    assert len(calls) == measured and [p["params"] for p in again] == [p["params"] for p in start]
    study = open_study(space, storage, start=start)
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert [t.user_attrs["proposed_by"] for t in waiting] == ["auto"] * len(auto)
    assert study.user_attrs.get("descent_reserve", []) == [{k: v for k, v in p.items() if k != "reserve"} for p in kept]
    assert start_points(space, storage, cifar10_dir, tmp_path / "s") == []  # started: nothing is added again


def test_a_start_point_screened_lossless_trains_the_least_each_epochs_dimension_lists(base, cifar10_dir, tmp_path,
                                                                                     monkeypatch):
    """A point the screen measured within `lossless` of the base runs 0 epochs (its trial is the screened
    model); every other keeps the first listed 0.5. KD and the precisions are untouched."""
    space = _space(tmp_path, base)
    def highest(p):  # every precision at its highest listed value: the anchor (NNCF's int8 corner)
        return (p["bits"], p["bits_stage1"], p["act_bits"], p["act_stage1"]) == (8, 4, 8, 8)

    for screened, epochs in ((1.0, 0), (0.0, 0.5)):  # every pick above the base, then every pick far below it
        monkeypatch.setattr(autostart, "screen", lambda *a, s=screened: s)
        plan = autostart.auto_start(space, cifar10_dir, tmp_path / "cache")
        assert plan["points"] and all(p["finetune_epochs"] == epochs and p["kd"] is True for p in plan["points"])
        assert all(p["screen_acc"] == screened for p in plan["predicted"])
        assert highest(plan["points"][0]) == (screened == 1.0)  # the anchor first, only where it screens lossless
        assert len(plan["points"]) <= 3 + (screened == 1.0)
    trained = space.pipeline({**plan["points"][0], "method": "global_magnitude", "finetune_epochs": 0.5})
    untrained = space.pipeline({**plan["points"][0], "method": "global_magnitude", "finetune_epochs": 0})
    assert trained.steps[0].config.bn_recalibration == 0  # its fine-tune re-estimates them
    assert untrained.steps[0].config.bn_recalibration == 32  # sampler.auto.bn_images, as the screen re-estimates
    assert untrained.steps[-1].config.method == "ptq" and trained.steps[-1].config.method == "qat"


def test_auto_start_study_reports_how_each_trial_was_proposed(base, cifar10_dir, in_tmp):
    import csv

    path = space_file(in_tmp, base, dimensions={"method": ["global_magnitude"], "ratio": [0.3, 0.6],
                                                "finetune_epochs": [0], "bits": [8, 4], "act_bits": [32]},
                      sampler={"name": "random", "auto": {"images": 50, "bn_images": 32, "points": 2}},
                      budget={"trials": 3})
    r = run("study", "run", path, "--storage", f"sqlite:///{in_tmp}/o.db", "--mlflow", f"sqlite:///{in_tmp}/m.db",
            "--data-dir", cifar10_dir, "--quiet", "--out", in_tmp / "studies")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(in_tmp / "studies" / "tiny" / "pareto" / "pareto.csv")))
    by = {int(row["trial"]): row["proposed_by"] for row in rows}
    assert by[0] == "auto" and set(by.values()) <= {"auto", "sampler"}  # trial 0 is always an auto point
    from orchestrator.study.runner import open_study as _open

    st = _open(load_space(path), f"sqlite:///{in_tmp}/o.db", create=False)
    auto = [t for t in st.trials if t.user_attrs.get("proposed_by") == "auto"]
    assert 1 <= len(auto) <= 3 and [t.number for t in auto] == list(range(len(auto)))  # run first, in order
    # (2 spread over the front, and the anchor when the screen finds one within `lossless`)
    assert all({"predicted_drop", "predicted_footprint_bits", "screen_acc"} <= set(t.user_attrs) or
               "predicted_drop" in t.user_attrs for t in auto)
    timings = st.trials[0].user_attrs["timings"]
    assert {"load", "train", "evaluate", "footprint", "export", "mlflow", "trial"} <= set(timings)
    assert timings["trial"] >= sum(v for k, v in timings.items() if k != "trial") * 0.99


def test_auto_points_beyond_the_budget_is_one_line_before_anything(base, tmp_path):
    path = space_file(tmp_path, base, sampler={"auto": {"points": 9}}, budget={"trials": 4})
    r = run("study", "run", path, "--storage", f"sqlite:///{tmp_path}/o.db")
    one_line_error(r, r"sampler.auto.points=9 is more than budget.trials=4")
    assert not (tmp_path / "o.db").exists()


def test_a_method_without_a_zero_shot_form_cannot_be_measured(base, cifar10_dir, in_tmp):
    import optuna

    storage = f"sqlite:///{in_tmp}/o.db"
    path = space_file(in_tmp, base, dimensions={"method": ["slimming"], "ratio": [0.3], "finetune_epochs": [0]})
    r = run("study", "run", path, "--storage", storage, "--data-dir", cifar10_dir, "--out", in_tmp / "s", "--quiet",
            "--mlflow", f"sqlite:///{in_tmp}/m.db")
    one_line_error(r, r"sampler.start auto: no method of \['slimming'\] can be measured group by group")
    assert "tiny" not in optuna.get_all_study_names(storage)  # refused before the study exists


def test_warm_start_from_a_missing_or_different_study_is_refused_before_any_trial(base, cifar10_dir, in_tmp):
    storage = f"sqlite:///{in_tmp}/o.db"
    path = space_file(in_tmp, base, sampler={"start": "none", "warm_start": "nosuch"})
    r = run("study", "run", path, "--storage", storage, "--data-dir", cifar10_dir, "--out", in_tmp / "s", "--quiet",
            "--mlflow", f"sqlite:///{in_tmp}/m.db")
    one_line_error(r, r"sampler.warm_start: no study named 'nosuch'")
    import optuna

    assert "tiny" not in optuna.get_all_study_names(storage)  # nothing was created
    first = space_file(in_tmp, base, name="first", sampler={"name": "random", "start": "none"},
                       dimensions={"method": ["global_magnitude"], "ratio": [0.3], "finetune_epochs": [0],
                                   "bits": [32], "act_bits": [32]}, budget={"trials": 1})
    assert run("study", "run", first, "--storage", storage, "--data-dir", cifar10_dir, "--out", in_tmp / "s",
               "--quiet", "--mlflow", f"sqlite:///{in_tmp}/m.db").exit_code == 0
    other = space_file(in_tmp, base, sampler={"start": "none", "warm_start": "first"},
                       dimensions={"method": ["global_magnitude"], "ratio": [0.5, 0.6], "finetune_epochs": [0],
                                   "bits": [32], "act_bits": [32]})
    r = run("study", "run", other, "--storage", storage, "--data-dir", cifar10_dir, "--out", in_tmp / "s", "--quiet",
            "--mlflow", f"sqlite:///{in_tmp}/m.db")
    one_line_error(r, r"sampler.warm_start: study 'first' ran ratio=0.3, outside this space's \[0.5, 0.6\]")
    assert "tiny" not in optuna.get_all_study_names(storage)
    same = space_file(in_tmp, base, sampler={"name": "random", "start": "none", "warm_start": "first"},
                      dimensions={"method": ["global_magnitude"], "ratio": [0.3, 0.6], "finetune_epochs": [0],
                                  "bits": [32], "act_bits": [32]}, budget={"trials": 2})
    r = run("study", "run", same, "--storage", storage, "--data-dir", cifar10_dir, "--out", in_tmp / "s", "--quiet",
            "--mlflow", f"sqlite:///{in_tmp}/m.db")
    assert r.exit_code == 0, r.output
    st = open_study(load_space(same), storage, create=False)
    first_trial = min(st.trials, key=lambda t: t.number)
    assert first_trial.user_attrs["proposed_by"] == "warm-start:first" and first_trial.params["ratio"] == 0.3


@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenetv2"])
def test_the_shipped_space_runs_unedited_on_every_family(arch, tmp_path):
    """`quick_cpu.yaml` names only groups every family has (stage1..3) and methods every family supports: with
    --base on another architecture it validates against that model, as its own study (<name>-<stem>)."""
    from orchestrator.checkpoint import from_model, save_checkpoint
    from orchestrator.models import build_model
    from orchestrator.study.autostart import _methods

    model = build_model(arch, width_mult=0.25)
    ckpt = save_checkpoint(tmp_path / f"{arch}.pt", from_model(model, "cifar10", {"mean": [0.5] * 3,
                                                                                   "std": [0.25] * 3}))
    from pathlib import Path

    space = load_space(Path(__file__).parents[1] / "search_spaces" / "quick_cpu.yaml", base=ckpt)
    assert space.name == f"quick-cpu-{arch}" and space.base == str(ckpt)
    space.check_base(model)  # raises on a group the model lacks
    assert set(_methods(space)) == {"global_magnitude", "l1_filter"}
    assert space.sampler.points == [] and space.sampler.start == "auto"  # no hand-written start point


def test_a_method_refuses_a_family_it_does_not_declare_in_one_line_and_a_space_naming_it_fails_first(
        tmp_path, base, monkeypatch):
    """Every registered method prunes the whole zoo today (test_contracts); one that declares fewer families
    (`PruneConfig.families`) refuses the others in prune_, and a study space naming it fails before any trial."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.models import build_model
    from orchestrator.pruning import prune_
    from orchestrator.pruning.thinet import ThiNet

    monkeypatch.setattr(ThiNet, "families", ("resnet", "vgg"))
    space = load_space(space_file(tmp_path, base, dimensions={"method": ["none", "thinet"], "ratio": [0.5]}))
    space.check_base(build_model("vgg11", width_mult=0.125))
    mobilenet = build_model("mobilenetv2", width_mult=0.25)
    with pytest.raises(OrchestratorError, match=r"dimensions.method: method 'thinet' does not prune mobilenetv2 "
                                                r"models; it prunes resnet, vgg; the base .* is mobilenetv2"):
        space.check_base(mobilenet)
    with pytest.raises(OrchestratorError, match=r"^method 'thinet' does not prune mobilenetv2 models"):
        prune_(mobilenet, {"method": "thinet"})


class _Done:  # a finished trial as the veto reads it
    def __init__(self, number, screen_acc, total_bits, state="COMPLETE", below_floor=0.0, **attrs):
        self.number, self.state = number, type("S", (), {"name": state})()
        self.user_attrs = {"screen_acc": screen_acc, "total_bits": total_bits, **attrs}
        self.constraints = {"accuracy_drop": below_floor}  # > 0: infeasible


def test_the_veto_rejects_a_proposal_beaten_on_screen_and_footprint_only(base, cifar10_dir, tmp_path):
    space = _space(tmp_path, base)
    space = space.model_copy(update={"sampler": space.sampler.model_copy(update={"veto": 2.0})})
    veto = autostart.Veto(space, cifar10_dir)
    params = {"method": "global_magnitude", "ratio": 0.6, "finetune_epochs": 0, "kd": False, "bits": 4,
              "bits_stage1": 2, "act_bits": 8, "act_stage1": 4}
    verdict = veto([], params)
    acc, bits = verdict["screen_acc"], verdict["screen_footprint_bits"]
    assert 0 <= acc <= 1 and bits > 0
    beats = _Done(7, acc + 0.02, bits)  # exactly the margin higher, same footprint: dominated
    assert veto([beats], params)["vetoed_by"] == 7
    for other in (_Done(1, acc + 0.0199, bits), _Done(2, acc + 0.5, bits + 1), _Done(3, acc + 0.5, bits, "FAIL"),
                  _Done(4, acc + 0.5, bits, duplicate_of=7)):  # short of the margin, larger, failed, a repeat
        assert "vetoed_by" not in veto([other], params), other.number
    assert veto([_Done(1, acc + 0.0199, bits), beats], params)["vetoed_by"] == 7
    assert veto([beats], params)["veto_reason"] == "dominated"
    # a larger trial that screened the margin higher and still fell below the floor: predicted infeasible
    failed = veto([_Done(8, acc + 0.02, bits + 1, below_floor=0.01)], params)
    assert failed["vetoed_by"] == 8 and failed["veto_reason"] == "infeasible"
    for other in (_Done(9, acc + 0.0199, bits + 1, below_floor=0.01), _Done(10, acc + 0.5, bits + 1, below_floor=0.0),
                  _Done(11, acc + 0.5, bits + 1, "FAIL", below_floor=0.01)):  # short of the margin, feasible, failed
        assert "vetoed_by" not in veto([other], params), other.number


def test_a_vetoed_proposal_trains_nothing_and_spends_no_budget(base, cifar10_dir, in_tmp):
    """A margin of 0 vetoes every proposal that screens no better than a smaller finished trial; each one
    vetoed is PRUNED with the trial that beat it, has no run, no files, and the budget is spent on others."""
    from orchestrator.study.runner import finished

    path = space_file(in_tmp, base, dimensions={"method": ["global_magnitude"], "ratio": [0.3, 0.45, 0.6, 0.75, 0.9],
                                                "finetune_epochs": [0], "bits": [8, 6, 4], "act_bits": [32]},
                      sampler={"name": "random", "veto": 0, "auto": {"images": 50, "bn_images": 32, "points": 1}},
                      budget={"trials": 4})
    storage = f"sqlite:///{in_tmp}/o.db"
    r = run("study", "run", path, "--storage", storage, "--mlflow", f"sqlite:///{in_tmp}/m.db",
            "--data-dir", cifar10_dir, "--quiet", "--out", in_tmp / "studies")
    assert r.exit_code == 0, r.output
    st = open_study(load_space(path), storage, create=False)
    trials = st.get_trials(deepcopy=False)
    vetoed = [t for t in trials if t.state.name == "PRUNED"]
    assert vetoed, [(t.number, t.state.name, t.user_attrs.get("screen_acc")) for t in trials]
    for t in vetoed:
        by = trials[t.user_attrs["vetoed_by"]]
        assert by.state.name == "COMPLETE" and by.number < t.number
        assert by.user_attrs["total_bits"] <= t.user_attrs["screen_footprint_bits"]
        assert by.user_attrs["screen_acc"] >= t.user_attrs["screen_acc"]
        assert "mlflow_run_id" not in t.user_attrs and not (in_tmp / "studies" / "tiny" / f"trial{t.number:04d}.pt").exists()
    assert finished(st) == 4 and "vetoed" in r.output
    for t in trials:  # a proposal that ran measured the footprint its screen predicted
        if t.state.name == "COMPLETE" and "screen_footprint_bits" in t.user_attrs and "duplicate_of" not in t.user_attrs:
            assert t.user_attrs["total_bits"] == t.user_attrs["screen_footprint_bits"], t.number


@pytest.mark.parametrize("bn_images", [256, 100])
def test_the_probe_re_estimates_bn_on_exactly_its_bn_images(bn_images):
    """Whole loader batches once ran 500 images for 256 (two batches of 250): the screen's BN statistics come
    from exactly `bn_images` training images, and its accuracy from exactly `images` validation images."""
    import torch

    from conftest import TOY_NORM, toy_split
    from orchestrator.models import build_model

    model = build_model("resnet20", num_classes=10)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((m.training, len(args[0]))))
    probe = autostart.Probe(toy_split(600), toy_split(300, seed=1), TOY_NORM, images=120, bn_images=bn_images,
                            device="cpu")
    with torch.no_grad():
        probe.accuracy(model)
    assert sum(n for training, n in seen if training) == bn_images
    assert sum(n for training, n in seen if not training) == 120
