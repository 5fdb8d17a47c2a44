"""Per-group allocation, composed trials, cheap recovery, constraints and repeats in studies."""

import optuna
import pytest
import torch
from pydantic import ValidationError

from orchestrator.checkpoint import load_model
from orchestrator.data import load_split
from orchestrator.errors import OrchestratorError
from orchestrator.models import build_model, layer_groups
from orchestrator.pruning import finalize_, prune_, sparsity
from orchestrator.quant import QuantConfig
from orchestrator.study import load_space, run_study
from orchestrator.study.pareto import rows
from orchestrator.study.runner import finished
from orchestrator.study.sampler import SearchSampler
from orchestrator.train import TrainConfig, train
from conftest import one_line_error, run
from conftest import space_file


@pytest.mark.parametrize("arch", ["resnet20", "resnet20b", "vgg11", "mobilenetv2"])
def test_layer_groups_cover_every_layer_once_in_network_order(arch):
    model = build_model(arch)
    groups = layer_groups(model)
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [n for g in groups.values() for n in g] == names
    assert list(groups)[-1] == "classifier"
    if arch.startswith("resnet"):
        assert list(groups) == ["stem", "stage1", "stage2", "stage3", "classifier"] and groups["stem"] == ["conv1"]
        assert "layer2.0.shortcut.0" in groups["stage2"] or arch == "resnet20"


def test_group_ratios_give_each_group_its_own_exact_sparsity():
    model = build_model("resnet20")
    sizes = {g: sum(model.get_submodule(n).weight.numel() for n in names) for g, names in layer_groups(model).items()}
    model = finalize_(prune_(model, {"method": "global_magnitude", "ratio": 0.8,
                                     "group_ratios": {"stage1": 0.5, "classifier": 0.0}}))
    zeros = {g: sum(int((model.get_submodule(n).weight == 0).sum()) for n in names)
             for g, names in layer_groups(model).items()}
    assert zeros["stage1"] == round(0.5 * sizes["stage1"]) and zeros["classifier"] == 0
    rest = sizes["stem"] + sizes["stage2"] + sizes["stage3"]
    assert zeros["stem"] + zeros["stage2"] + zeros["stage3"] == round(0.8 * rest)
    with pytest.raises(OrchestratorError, match="group 'stage7'.*groups: stem, stage1, stage2, stage3, classifier"):
        prune_(build_model("resnet20"), {"method": "global_magnitude", "group_ratios": {"stage7": 0.5}})
    with pytest.raises(ValidationError, match="group_ratios.stage1"):
        prune_(build_model("resnet20"), {"method": "layer_magnitude", "group_ratios": {"stage1": 1.5}})


def test_structured_group_ratios_follow_the_producing_layer():
    model = prune_(build_model("resnet20"), {"method": "l1_filter", "ratio": 0.5,
                                             "group_ratios": {"stage1": 0.25, "stage3": 0.0}})
    assert model.widths["blocks"] == [[12, 12, 12], [16, 16, 16], [64, 64, 64]]


def test_group_bits_set_the_bits_of_every_layer_of_the_group():
    model = build_model("resnet20")
    plan = QuantConfig(bits=4, group_bits={"stage3": 2, "stem": 6}).plan(model)
    groups = layer_groups(model)
    assert {plan[n] for n in groups["stage3"]} == {2} and plan["conv1"] == 6
    assert {plan[n] for n in groups["stage1"]} == {4} and plan["linear"] == 8  # ends_bits
    plan = QuantConfig(bits=16, group_bits={"stage3": 1}).plan(model)  # ends keep 8 bits only for int/binary
    assert {plan[n] for n in groups["stage3"]} == {1} and plan["conv1"] == plan["linear"] == 16
    with pytest.raises(OrchestratorError, match="group_bits names group 'head'"):
        QuantConfig(group_bits={"head": 4}).plan(model)


def test_a_fraction_of_an_epoch_runs_that_share_of_the_steps(cifar10_dir):
    split = load_split("cifar10", "train", cifar10_dir)  # 100 images: 10 batches of 10
    calls = []

    def loss_fn(logits, y, x):
        calls.append(len(y))
        return torch.nn.functional.cross_entropy(logits, y)

    norm = {"mean": [0.5] * 3, "std": [0.25] * 3}
    for epochs, steps in ((0.25, 2), (0.01, 1), (1.5, 15), (1.04, 10)):  # 1.04 x 10 rounds to 10: no empty epoch
        calls.clear()
        history = train(build_model("resnet8", width_mult=0.25), split, TrainConfig(epochs=epochs, batch_size=10),
                        norm, progress=False, loss_fn=loss_fn)
        assert len(calls) == steps and len(history) == -(-steps // 10)
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValidationError, match="epochs"):
            TrainConfig(epochs=bad)


def test_space_keys_are_checked_before_any_trial(tmp_path, base, cifar10_dir):
    for over, pattern in (({"ratio": {"low": 0.5, "high": 0.9, "step": 0.07}}, "step=0.07 does not divide"),
                          ({"finetune_epochs": [-0.5]}, "'dimensions.finetune_epochs.0': .*greater than or equal to 0"),
                          ({"group_bits": {"stage1": 12}}, "group_bits.stage1"),
                          ({"group_scale": {"stage1": []}}, "group_scale.stage1"),
                          ({"channels": {"method": "global_magnitude"}}, "not a structured method")):
        one_line_error(run("study", "run", space_file(tmp_path, base, dimensions=over), "--data-dir", cifar10_dir),
                       pattern)
    for over, pattern in (({"max_accuracy_drop": 0}, "max_accuracy_drop"), ({"max_accuracy_drop": 1.5}, "max_accuracy_drop"),
                          ({"min_acc": 0.5}, "min_acc")):
        one_line_error(run("study", "run", space_file(tmp_path, base, constraints=over), "--data-dir", cifar10_dir),
                       pattern)
    # a group the base model does not have: named with its key, before the study exists
    path = space_file(tmp_path, base, dimensions={"method": ["global_magnitude"], "group_scale": {"stage9": [1.0]}})
    one_line_error(run("study", "run", path, "--data-dir", cifar10_dir, "--storage", f"sqlite:///{tmp_path}/o.db"),
                   "dimensions.group_scale.stage9")
    assert not (tmp_path / "o.db").exists()
    one_line_error(run("study", "run", space_file(tmp_path, base), "--data-dir", tmp_path / "nowhere",
                       "--storage", f"sqlite:///{tmp_path}/o.db"), "nowhere")
    assert not (tmp_path / "o.db").exists()


def test_a_composed_trial_is_channels_then_sparsity_then_quantization(tmp_path, base):
    space = load_space(space_file(tmp_path, base, dimensions={
        "method": ["global_magnitude"], "ratio": {"low": 0.5, "high": 0.9, "step": 0.05},
        "group_scale": {"stage1": [0.5], "stage3": [1.5]}, "finetune_epochs": [0.25], "quant_epochs": [0.5],
        "kd": [True], "bits": [4], "group_bits": {"stage3": [2, 3]}, "act_bits": [6],
        "channels": {"method": "l1_filter", "ratio": [0.25], "finetune_epochs": [0.1]}}))
    trial = optuna.trial.FixedTrial({"method": "global_magnitude", "ratio": 0.8, "scale_stage1": 0.5,
                                     "scale_stage3": 1.5, "channel_ratio": 0.25, "channel_epochs": 0.1,
                                     "finetune_epochs": 0.25, "quant_epochs": 0.5, "kd": True, "bits": 4,
                                     "bits_stage3": 3, "act_bits": 6})
    steps = space.suggest(trial).model_dump()["steps"]
    (c,), (p,), (q,) = (s.values() for s in steps)
    assert [list(s) for s in steps] == [["prune"], ["prune"], ["quantize"]]
    assert c["method"] == "l1_filter" and c["ratio"] == 0.25 and c["finetune"]["epochs"] == 0.1
    assert p["ratio"] == 0.8 and p["group_ratios"] == {"stage1": 0.4, "stage3": 0.98}  # 1.2 capped
    assert p["finetune"]["epochs"] == 0.25 and p["finetune"]["kd"] == {"temperature": 4.0, "alpha": 0.9}  # defaults
    assert q["method"] == "qat" and q["finetune"]["epochs"] == 0.5 and q["bits"] == 4 and q["act_bits"] == 6
    assert q["group_bits"] == {"stage3": 3}
    # "none" ignores its ratio: two such trials are one pipeline, so a repeat is recognised
    a = space.pipeline({"method": "none", "ratio": 0.5, "bits": 4, "act_bits": 32, "quant_epochs": 0})
    b = space.pipeline({"method": "none", "ratio": 0.9, "bits": 4, "act_bits": 32, "quant_epochs": 0})
    assert a == b and [s.kind for s in a.steps] == ["quantize"] and a.steps[0].quantize.method == "ptq"


def test_a_grid_ratio_is_the_start_points_value_so_they_share_cache_and_repeats(tmp_path, base):
    space = load_space(space_file(tmp_path, base, dimensions={
        "method": ["global_magnitude"], "ratio": {"low": 0.7, "high": 0.85, "step": 0.05}, "bits": [4]}))
    noisy = 0.7 + 2 * 0.05  # what Optuna's grid gives for the third value
    assert noisy != 0.8
    params = {k: v[0] for k, v in space.suggested().items() if isinstance(v, list)}
    suggested = space.suggest(optuna.trial.FixedTrial({**params, "ratio": noisy}))
    assert suggested == space.pipeline({**params, "ratio": 0.8})
    assert suggested.steps[0].prune.ratio == 0.8


def test_per_trial_seeds_differ_between_trials_and_repeat_for_the_same_number():
    def first_params(seed, numbers):
        sampler = SearchSampler(optuna.samplers.RandomSampler(seed=seed), seed)
        study = optuna.create_study(sampler=sampler)
        out = []
        for n in numbers:
            while len(study.trials) < n:  # advance the trial counter without sampling
                study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0))
            t = study.ask()
            out.append(t.suggest_float("x", 0, 1))
            study.tell(t, 0.0)
        return out

    a, b = first_params(0, [0, 5]), first_params(0, [0, 5])
    assert a == b and a[0] != a[1]
    assert first_params(1, [0])[0] != a[0]


START = {"method": "global_magnitude", "ratio": 0.95, "finetune_epochs": 0, "kd": False, "bits": 32, "act_bits": 32}


def test_start_points_must_lie_in_the_space(tmp_path, base):
    dims = {"method": ["global_magnitude"], "ratio": {"low": 0.5, "high": 0.9, "step": 0.1}}
    for point, pattern in (({**START, "ratio": 0.95}, r"start\[0\].ratio=0.95 is outside"),
                           ({**START, "colour": 1}, r"start\[0\].colour is not a parameter"),
                           ({"method": "global_magnitude"}, r"start\[0\] lacks ratio")):
        with pytest.raises(ValidationError, match=pattern):
            load_space(space_file(tmp_path, base, dimensions=dims, sampler={"start": [point]}))


def test_a_start_point_value_outside_a_list_is_checked_by_its_dimension_rules(tmp_path, base):
    dims = {"method": ["global_magnitude"], "ratio": [0.5], "finetune_epochs": [0], "bits": [32, 8],
            "act_bits": [32], "group_bits": {"stage3": [8]}}
    point = {**START, "ratio": 0.5, "bits_stage3": 8}
    for over, pattern in (({"finetune_epochs": -1}, r"start\[0\].finetune_epochs=-1: .*greater than or equal"),
                          ({"bits_stage3": 17}, r"start\[0\].bits_stage3=17: "),
                          ({"method": "colour"}, r"start\[0\].method='colour': .*unknown method")):
        with pytest.raises(ValidationError, match=pattern):
            load_space(space_file(tmp_path, base, dimensions=dims, sampler={"start": [{**point, **over}]}))
    with pytest.raises(ValidationError, match=r"start\[0\].finetune_epochs=2 is not in \[0\]: a grid runs"):
        load_space(space_file(tmp_path, base, dimensions=dims, sampler={"name": "grid", "start": [
            {**point, "finetune_epochs": 2}]}))
    for over in ({"finetune_epochs": True}, {"kd": 1}, {"finetune_epochs": "2"}):
        with pytest.raises(ValidationError, match=rf"start\[0\].{next(iter(over))}=.* is not of the type"):
            load_space(space_file(tmp_path, base, dimensions=dims, sampler={"start": [{**point, **over}]}))
    space = load_space(space_file(tmp_path, base, dimensions=dims, sampler={"start": [
        {**point, "finetune_epochs": 2, "bits_stage3": 4, "kd": True}]}))
    assert space.start_values() == {"finetune_epochs": [2], "kd": [True], "bits_stage3": [4]}


@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_a_start_point_runs_a_value_the_sampler_never_proposes(base, cifar10_dir, in_tmp, sampler):
    # a longer fine-tune at one start point only: every trial's choices hold it (Optuna needs one set per
    # parameter), but neither NSGA-II's crossover (population 2: trials 2-5 are children, bred from the
    # start point too) nor random draws propose it; the study resumes under the same space
    dims = {"method": ["global_magnitude"], "ratio": [0.3, 0.5, 0.7], "finetune_epochs": [0, 0.02],
            "bits": [32, 8], "act_bits": [32]}
    point = {**START, "ratio": 0.5, "finetune_epochs": 0.05, "bits": 8}
    storage, uri = f"sqlite:///{in_tmp}/o.db", f"sqlite:///{in_tmp}/m.db"

    def study(trials):
        path = space_file(in_tmp, base, dimensions=dims, budget={"trials": trials},
                          sampler={"name": sampler, "population": 2, "seed": 0, "start": [point]})
        return run_study(load_space(path), storage=storage, data_dir=cifar10_dir, out_dir=in_tmp / "s",
                         tracking_uri=uri)

    study(4)
    st = study(6)  # resumed: the start point's value is not a changed space
    assert finished(st) == 6 and all(t.state.name == "COMPLETE" for t in st.trials)
    first, rest = st.trials[0], st.trials[1:]
    assert first.params == point and first.distributions["finetune_epochs"].choices == (0, 0.02, 0.05)
    assert first.user_attrs["pipeline"]["steps"][0]["prune"]["finetune"]["epochs"] == 0.05
    assert all(t.distributions["finetune_epochs"].choices == (0, 0.02, 0.05) for t in rest)
    assert all(t.params["finetune_epochs"] in (0, 0.02) for t in rest)
    assert {t.params["finetune_epochs"] for t in rest} == {0, 0.02}  # redrawn among the others, not fixed


def test_repeats_cost_no_budget_and_infeasible_trials_stay_off_the_front(base, cifar10_dir, in_tmp):
    # one unstructured method at two ratios and the dense base: at most 3 distinct pipelines for a budget of 3;
    # the random sampler proposes repeats, which are answered from the first run's record
    path = space_file(in_tmp, base, dimensions={"method": ["none", "global_magnitude"], "ratio": [0.3, 0.95],
                                                "finetune_epochs": [0], "bits": [32], "act_bits": [32]},
                      constraints={"max_accuracy_drop": 0.0001}, budget={"trials": 3},
                      sampler={"name": "random", "seed": 0, "start": [START]})
    st = run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir,
                   out_dir=in_tmp / "s", tracking_uri=f"sqlite:///{in_tmp}/m.db")
    assert st.trials[0].params == START  # the start point runs first
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    originals = [t for t in complete if "duplicate_of" not in t.user_attrs]
    repeats = [t for t in complete if "duplicate_of" in t.user_attrs]
    assert finished(st) == len(originals) == 3 and len(complete) == 3 + len(repeats) and repeats
    pipelines = [str(t.user_attrs["pipeline"]) for t in originals]
    assert len(set(pipelines)) == 3
    for t in repeats:
        same = st.trials[t.user_attrs["duplicate_of"]]
        assert t.values == same.values and t.user_attrs["total_bits"] == same.user_attrs["total_bits"]
    table = rows(st)
    assert len(table) == 3  # repeats are not plotted twice
    base_val = table[0]["base_val_acc"]
    for r in table:
        assert r["feasible"] == (base_val - r["val_acc"] <= 0.0001)
        assert not r["pareto"] or r["feasible"]
    assert any(r["pareto"] for r in table)  # the dense base is always feasible
    # the realized allocation is recorded with every trial
    pruned = [r for r in table if r["method"] == "global_magnitude"]
    assert pruned and all(set(r["realized"]["sparsity"]) == {"stem", "stage1", "stage2", "stage3", "classifier"}
                          for r in pruned)
    model, _ = load_model(st.trials[pruned[0]["trial"]].user_attrs["checkpoint"])
    assert abs(sparsity(model)["total"] - pruned[0]["ratio"]) < 0.01




def test_tpe_never_proposes_a_start_only_value(tmp_path, base):
    # TPE models each finished trial's value in the choices: the start point's appended value must neither
    # break it nor be proposed (12 trials: past its 10 random start-up trials)
    from orchestrator.study.runner import _sampler

    dims = {"method": ["global_magnitude"], "ratio": [0.3, 0.5], "finetune_epochs": [0, 0.02], "bits": [32, 8],
            "act_bits": [32]}
    point = {**START, "ratio": 0.5, "finetune_epochs": 0.05, "bits": 8}
    space = load_space(space_file(tmp_path, base, dimensions=dims, sampler={"name": "tpe", "start": [point]}))
    study = optuna.create_study(directions=space.directions(), sampler=_sampler(space))
    study.enqueue_trial(point)
    study.optimize(lambda t: [len(str(space.suggest(t))) % 7, t.params["ratio"]], n_trials=12)
    assert all(t.state.name == "COMPLETE" for t in study.trials) and study.trials[0].params == point
    assert all(t.params["finetune_epochs"] in (0, 0.02) for t in study.trials[1:])


def test_a_space_that_names_no_sampler_runs_multivariate_tpe_fit_after_its_start_points(tmp_path, base):
    # the sampler table's winner at 20 and 30 trials (docs/studies.md) is the default; its start-up trials are
    # the automatic start points, so its model is fit from the first proposal after them
    from orchestrator.study.runner import _sampler

    space = load_space(space_file(tmp_path, base, sampler={"start": "auto", "auto": {"points": 3}},
                                  budget={"trials": 9}))
    inner = _sampler(space).inner
    assert isinstance(inner, optuna.samplers.TPESampler)
    assert inner._multivariate and inner._n_startup_trials == 3


def test_repeats_end_a_study_only_when_they_come_in_a_row(base, cifar10_dir, in_tmp):
    # 12 configurations for 10 trials, drawn at random: more repeats in all than the bound (10) before the
    # budget is spent, but never 10 in a row, so the study trains all 10; a space with 2 configurations for
    # 10 trials stops after 2, once 10 repeats came in a row
    def study(ratios, bits, name):
        path = space_file(in_tmp, base, name=name, dimensions={
            "method": ["global_magnitude"], "ratio": ratios, "finetune_epochs": [0], "bits": bits, "act_bits": [32]},
            budget={"trials": 10}, sampler={"name": "random", "seed": 0, "start": "none", "veto": None})
        return run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir,
                         out_dir=in_tmp / "s", tracking_uri=f"sqlite:///{in_tmp}/m.db")

    st = study([0.3, 0.4, 0.5, 0.6], [32, 8, 4], "wide")
    repeats = [t for t in st.trials if "duplicate_of" in t.user_attrs]
    assert finished(st) == 10 and len(repeats) > 10
    st = study([0.3], [32, 8], "narrow")
    assert finished(st) == 2 and len(st.trials) == 2 + 11
