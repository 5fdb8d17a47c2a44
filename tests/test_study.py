import json
import re

import pytest

from conftest import bad_config, one_line_error, run, space_file
from orchestrator.errors import OrchestratorError
from orchestrator.study import load_space, run_study
from orchestrator.study.pareto import ran
from orchestrator.study.runner import open_study, status



def _front_has_test_accuracy_and_nothing_else(st, runs, cifar10_dir):
    """The test set is read once per final front trial, on its exported file; the accuracy is in the Pareto rows,
    the trial's record file and its MLflow run. A trial never on the front has none (no test-set read)."""
    from orchestrator.data import load_split
    from orchestrator.footprint.export import load_export
    from orchestrator.study.pareto import rows
    from orchestrator.train import evaluate

    by_trial = {r["trial"]: r for r in rows(st)}
    test = load_split("cifar10", "test", cifar10_dir)
    for x in runs:
        r = by_trial[int(x.data.tags["orchestrator.trial"])]
        record = json.loads(open(st.trials[r["trial"]].user_attrs["export"].replace(".orcx", ".json")).read())
        if r["pareto"]:
            model, header = load_export(st.trials[r["trial"]].user_attrs["export"])
            want = evaluate(model, test, header["normalization"])["acc"]
            assert r["test_acc"] == want == x.data.metrics["test_acc"] == record["final"]["test_acc"]
        else:
            assert r["test_acc"] is None and "test_acc" not in x.data.metrics and record["final"]["test_acc"] is None
    assert any(r["pareto"] for r in by_trial.values())


def test_tiny_study_runs_end_to_end_into_sqlite_and_mlflow(base, cifar10_dir, in_tmp):
    import mlflow
    path = space_file(in_tmp, base)
    storage, uri = f"sqlite:///{in_tmp}/optuna.db", f"sqlite:///{in_tmp}/mlflow.db"
    r = run("study", "run", path, "--storage", storage, "--mlflow", uri, "--data-dir", cifar10_dir, "--quiet",
            "--out", in_tmp / "studies")
    assert r.exit_code == 0, r.output
    assert r.output.count("trial ") >= 4 and "Pareto front" in r.output
    st = open_study(load_space(path), storage, create=False)
    assert status(st) == {"COMPLETE": 4}
    for t in st.trials:
        assert t.values == [t.user_attrs["val_acc"], t.user_attrs["total_bits"] / 8]  # accuracy, footprint (B)
    pareto = in_tmp / "studies" / "tiny" / "pareto"
    for name in ("pareto.png", "pareto.html", "pareto.csv", "pareto.md"):
        assert (pareto / name).stat().st_size > 100
    html = (pareto / "pareto.html").read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?https?:", html)  # offline: plotly.js is embedded
    assert "Plotly.newPlot" in html and html.count("trial ") >= 4  # every trial's hover text
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parent = [x for x in runs if x.data.tags.get("orchestrator.kind") == "study"]
    trials = [x for x in runs if x.data.tags.get("orchestrator.kind") == "trial"]
    assert len(parent) == 1 and len(trials) == 4
    assert all(x.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for x in trials)
    assert all({"val_acc", "footprint_bytes"} <= set(x.data.metrics) for x in trials)
    _front_has_test_accuracy_and_nothing_else(st, trials, cifar10_dir)
    assert {x.data.tags["orchestrator.pareto"] for x in trials} <= {"true", "false"}
    assert sum(x.data.tags["orchestrator.pareto"] == "true" for x in trials) == len(st.best_trials)
    arts = [a.path for a in client.list_artifacts(trials[0].info.run_id)]
    assert "record.json" in arts and any(a.endswith(".orcx") for a in arts) and any(a.endswith(".pt") for a in arts)
    assert "footprint.txt" in arts  # the per-layer table
    from orchestrator.study.tracking import EXPORT_TAG, file_sha256  # `deploy --mlflow` finds a trial's run by it
    for x in trials:
        export = in_tmp / "studies" / "tiny" / f"trial{int(x.data.tags['orchestrator.trial']):04d}.orcx"
        assert x.data.tags[EXPORT_TAG] == file_sha256(export)
    fp = mlflow.artifacts.load_dict(f"{trials[0].info.artifact_uri}/footprint.json")
    assert fp["total_bits"] / 8 == trials[0].data.metrics["footprint_bytes"] and len(fp["tensors"]) > 3
    # a second run with the same name resumes: the budget is spent, nothing is redone
    r = run("study", "run", path, "--storage", storage, "--mlflow", uri, "--data-dir", cifar10_dir, "--quiet",
            "--out", in_tmp / "studies")
    assert r.exit_code == 0 and "trial 4" not in r.output
    assert len(open_study(load_space(path), storage, create=False).trials) == 4
    r = run("study", "status", path, "--storage", storage)
    assert r.exit_code == 0 and "COMPLETE" in r.output
    # the same name with changed choices: named before any trial runs, nothing added to the study
    changed = space_file(in_tmp, base, dimensions={**load_space(path).dimensions.model_dump(exclude_none=True),
                                                   "ratio": [0.3, 0.7]}, budget={"trials": 6})
    r = run("study", "run", changed, "--storage", storage, "--mlflow", uri, "--data-dir", cifar10_dir, "--quiet",
            "--out", in_tmp / "studies")
    one_line_error(r, r"study 'tiny' in .* ran ratio over \[0.3, 0.6\], this space has \[0.3, 0.7\]")
    assert len(open_study(load_space(path), storage, create=False).trials) == 4


def test_failed_trials_are_recorded_and_the_study_goes_on(base, cifar10_dir, in_tmp):
    path = space_file(in_tmp, base, finetune={"batch_size": 1000},
                      dimensions={"method": ["global_magnitude"], "ratio": [0.5], "finetune_epochs": [1, 0]},
                      budget={"trials": 3})
    st = run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir,
                   out_dir=in_tmp / "s", tracking_uri=f"sqlite:///{in_tmp}/m.db")
    states = [t.state.name for t in st.trials]
    assert len(states) == 3 and "FAIL" in states
    failed = [t for t in st.trials if t.state.name == "FAIL"]
    assert all("batch_size=1000 exceeds" in t.user_attrs["fail_reason"] for t in failed)


def test_search_space_validation(tmp_path, base):
    good = load_space(space_file(tmp_path, base))
    assert good.directions() == ["maximize", "minimize"]
    bad = {"dimensions": {"method": ["magic"]}}
    for over, pattern in ((bad, "unknown method 'magic'"), ({"dimensions": {"ratio": {"low": 0.9, "high": 0.2}}}, "low=0.9"),
                          ({"dimensions": {"bits": [12]}}, "bits must be"), ({"budget": {"trials": 0}}, "trials"),
                          ({"objectives": ["footprint"]}, "accuracy"), ({"sampler": {"name": "cmaes"}}, "sampler"),
                          ({"extra_key": 1}, "extra_key"), ({"name": "bad name!"}, "name")):
        with pytest.raises(bad_config(), match=pattern):
            load_space(space_file(tmp_path, base, **over))
    one_line_error(run("study", "run", space_file(tmp_path, base, budget={"trials": -1})), "trials")
    one_line_error(run("study", "status", space_file(tmp_path, base), "--storage", f"sqlite:///{tmp_path}/none.db"),
                   "no study named 'tiny'")
    one_line_error(run("study", "status", space_file(tmp_path, base), "--storage", "postgresql://u:p@127.0.0.1:1/x"),
                   "cannot open study storage")
    with pytest.raises(OrchestratorError, match="ratio as a list"):
        load_space(space_file(tmp_path, base, dimensions={"ratio": {"low": 0.1, "high": 0.5}})).grid()


def test_every_search_space_shipped_is_valid_and_starts_from_no_hand_written_point():
    """The spaces of `search_spaces/` (and the earlier runs' of `benchmarks/spaces/`) validate and round-trip;
    a shipped one leaves its start to the search (auto, none, or a grid), never to hand-written corners."""
    from pathlib import Path
    root = Path(__file__).parent.parent
    shipped = sorted(root.joinpath("search_spaces").glob("*.yaml"))
    assert shipped
    for f in shipped + sorted(root.joinpath("benchmarks", "spaces").glob("*.yaml")):
        space = load_space(f)
        assert space.budget.trials >= 1
        again = type(space).model_validate(json.loads(json.dumps(space.model_dump())))
        assert again == space  # the resolved space logged to MLflow reads back to the same space
        if f in shipped:
            assert space.sampler.start in ("auto", "none") and not space.sampler.warm_start, f.name


def _worker(space, storage, uri, data_dir, out, env):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "study", "run", str(space), "--storage", storage,
                             "--mlflow", uri, "--data-dir", str(data_dir), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_worker_killed_mid_trial_loses_no_finished_trial(base, cifar10_dir, in_tmp, monkeypatch):
    import os
    import signal
    import time
    # five configurations for three trials: the sampler's repeats (free, bounded) cannot exhaust the space;
    # 8 epochs make a trial last seconds, so the poll below catches one (at 2 epochs, 0.5-0.9 s windows were missed)
    path = space_file(in_tmp, base, dimensions={"method": ["global_magnitude"], "ratio": [0.3, 0.4, 0.5, 0.6, 0.7],
                                                "finetune_epochs": [8]}, budget={"trials": 3})
    storage, uri = f"sqlite:///{in_tmp}/o.db", f"sqlite:///{in_tmp}/m.db"
    env = {**os.environ, "ORCHESTRATOR_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1"}
    proc = _worker(path, storage, uri, cifar10_dir, in_tmp / "s", env)
    space = load_space(path)
    deadline = time.time() + 120
    before = None
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = open_study(space, storage, create=False).trials
        except OrchestratorError:
            trials = []
        done = [t for t in trials if t.state.name == "COMPLETE"]
        if done and any(t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs for t in trials):
            before = {t.number: (t.params, t.values) for t in done}
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert before, "the worker was never caught between two trials"
    # longer than the 3 s grace period plus the 1 s resolution of SQLite's heartbeat times (3.5 s left 0.2 s)
    time.sleep(5.5)
    monkeypatch.setenv("ORCHESTRATOR_HEARTBEAT_S", "1")
    st = run_study(space, storage=storage, data_dir=cifar10_dir, out_dir=in_tmp / "s", tracking_uri=uri)
    complete = {t.number: (t.params, t.values) for t in st.trials if t.state.name == "COMPLETE"}
    assert all(complete[n] == v for n, v in before.items())  # finished trials survived, unchanged
    # a repeat of a finished configuration is COMPLETE too (answered from its record, no run): count the trials that ran
    assert sum(map(ran, st.trials)) == 3 and sum(t.state.name == "FAIL" for t in st.trials) == 1
    import mlflow
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    lost = [t.user_attrs["mlflow_run_id"] for t in st.trials if t.state.name == "FAIL"]
    status_of = {r.info.run_id: r.info.status for r in runs}
    assert [status_of[r] for r in lost] == ["FAILED"]  # the killed worker's run no longer shows RUNNING
    assert sorted(status_of.values()) == ["FAILED"] + ["FINISHED"] * 4  # 3 trials and the study's run


def test_two_workers_share_a_postgres_study_and_an_mlflow_server(base, cifar10_dir, in_tmp):
    """The several-machine topology on loopback (.ci/services.sh starts the servers in CI)."""
    import os
    import uuid
    pg, server = os.environ.get("ORCHESTRATOR_TEST_POSTGRES"), os.environ.get("ORCHESTRATOR_TEST_MLFLOW")
    if not (pg and server):
        pytest.skip("no PostgreSQL/MLflow servers (source .ci/services.sh start to run this test)")
    import mlflow
    import psycopg
    name = f"two-workers-{uuid.uuid4().hex[:8]}"
    db = name.replace("-", "_")
    admin = pg.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:  # a fresh database: the workers race to create the schema
        conn.execute(f"CREATE DATABASE {db}")
    pg = pg.rsplit("/", 1)[0] + "/" + db
    path = space_file(in_tmp, base, name=name, dimensions={"method": ["none", "global_magnitude", "l1_filter"],
                                                           "ratio": [0.3, 0.5, 0.7], "bits": [32, 8]},
                      budget={"trials": 8})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [_worker(path, pg, server, cifar10_dir, in_tmp / f"w{i}", env) for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), [(w.returncode, o[-1500:]) for w, o in zip(workers, outputs)]
    assert all("trial " in o for o in outputs), outputs  # both workers ran trials
    st = open_study(load_space(path), pg, create=False)
    numbers = [t.number for t in st.trials]
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    trained = [t for t in complete if ran(t)]  # a repeat of a finished configuration is answered from its record
    assert len(numbers) == len(set(numbers)) and 8 <= len(trained) <= 9 and len(complete) == len(st.trials)
    client = mlflow.MlflowClient(server)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("orchestrator.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("orchestrator.kind") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["orchestrator.trial"]) for r in children) == sorted(t.number for t in trained)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and r.info.status == "FINISHED"
               for r in children)


def _tag_at_once(server, experiment_id, barrier, results):
    from orchestrator.study.tracking import _RaceSafe
    import mlflow
    client = _RaceSafe(mlflow.MlflowClient(server))
    try:
        barrier.wait(60)  # a partner that died before it: this one fails, it does not hang the test run
        client.set_experiment_tag(experiment_id, "k", "v")
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_two_workers_writing_the_same_new_tag_at_once_both_succeed():
    """Two workers writing one new experiment tag together: the server inserts it twice and refuses one
    insert (a unique-key violation) in about half the tries without the retry."""
    import multiprocessing
    import os
    import uuid
    server = os.environ.get("ORCHESTRATOR_TEST_MLFLOW")
    if not server:
        pytest.skip("no MLflow server (source .ci/services.sh start to run this test)")
    import mlflow
    ctx, results = multiprocessing.get_context("spawn"), []
    for _ in range(6):
        exp = mlflow.MlflowClient(server).create_experiment(f"tag-race-{uuid.uuid4().hex[:8]}")
        queue, barrier = ctx.Queue(), ctx.Barrier(2)
        procs = [ctx.Process(target=_tag_at_once, args=(server, exp, barrier, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            if p.is_alive():  # a hung worker must not keep the test run alive at exit
                p.kill()
        results += [queue.get(timeout=10) for _ in procs]
    assert results == ["ok"] * 12, results


def test_a_racing_tag_write_is_retried_and_any_other_error_is_not(monkeypatch):
    from orchestrator.study import tracking
    calls = []

    class Store:
        def set_tag(self, run_id, key, value):
            calls.append(key)
            if len(calls) == 1:
                raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates "tags_pk"')
            if key == "bad":
                raise RuntimeError("RESOURCE_DOES_NOT_EXIST: run 'r' not found")

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    client = tracking._RaceSafe(Store())
    client.set_tag("r", "k", "v")
    assert calls == ["k", "k"]
    with pytest.raises(RuntimeError, match="not found"):
        client.set_tag("r", "bad", "v")
    assert calls == ["k", "k", "bad"]  # not retried


def test_a_base_trained_on_the_validation_images_is_flagged(base, tmp_path):
    from orchestrator.checkpoint import load_checkpoint, save_checkpoint
    space = load_space(space_file(tmp_path, base))  # the fixture's base was trained with val_size=0
    warning = space.validation_warning()
    assert warning and "val_size=0" in warning and "--val-size 20" in warning
    ckpt = load_checkpoint(base)
    ckpt.config["val_size"] = 20  # held out exactly the study's validation images
    save_checkpoint(tmp_path / "held.pt", ckpt)
    assert load_space(space_file(tmp_path, tmp_path / "held.pt")).validation_warning() is None


def test_a_sqlite_mlflow_store_being_created_by_another_worker_is_retried(in_tmp, monkeypatch):
    import mlflow

    from orchestrator.study import tracking
    calls = []
    real = mlflow.MlflowClient

    def flaky(uri):  # what a worker sees while another one migrates the new store's schema
        calls.append(uri)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.OperationalError) duplicate column name: step")
        return real(uri)

    monkeypatch.setattr(mlflow, "MlflowClient", flaky)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    t = tracking.Tracker(f"sqlite:///{in_tmp}/m.db", "exp")
    assert len(calls) == 2 and t.client.get_experiment(t.experiment_id).name == "exp"
    monkeypatch.setattr(mlflow, "MlflowClient", lambda uri: (_ for _ in ()).throw(RuntimeError("still broken")))
    with pytest.raises(OrchestratorError, match="cannot use MLflow tracking URI .*still broken"):
        tracking.Tracker(f"sqlite:///{in_tmp}/m2.db", "exp")


def test_an_environmental_failure_stops_the_study_and_spends_no_budget(base, cifar10_dir, in_tmp, monkeypatch):
    """A full disk mid-trial: one error line and a non-zero exit, the trial not counted, the study's run
    FAILED; once the disk is fixed the same command runs the whole budget."""
    import mlflow

    from orchestrator.study import runner
    path = space_file(in_tmp, base, budget={"trials": 2})
    storage, uri = f"sqlite:///{in_tmp}/optuna.db", f"sqlite:///{in_tmp}/mlflow.db"
    args = ("study", "run", path, "--storage", storage, "--mlflow", uri, "--data-dir", cifar10_dir, "--quiet",
            "--out", in_tmp / "studies")
    real = runner.run_pipeline

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "run_pipeline", full_disk)
    one_line_error(run(*args), r"trial 0 failed for a reason outside its configuration.*No space left on device")
    st = open_study(load_space(path), storage, create=False)
    states = [t.state.name for t in st.trials]  # the failed start point, and the start points still queued
    assert states[0] == "FAIL" and set(states[1:]) <= {"WAITING"} and runner.finished(st) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the study's run and the trial's
    monkeypatch.setattr(runner, "run_pipeline", real)
    r = run(*args)
    assert r.exit_code == 0, r.output
    st = open_study(load_space(path), storage, create=False)
    assert runner.finished(st) == 2 and sum(t.state.name == "COMPLETE" for t in st.trials) == 2


def test_workers_option_runs_local_processes_with_a_share_of_the_cores(base, cifar10_dir, in_tmp):
    from orchestrator.study.workers import threads_per_worker
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(4, cores=16) == 4 and threads_per_worker(8, 2) == 1
    path = space_file(in_tmp, base, budget={"trials": 4})
    storage, uri = f"sqlite:///{in_tmp}/optuna.db", f"sqlite:///{in_tmp}/mlflow.db"
    r = run("study", "run", path, "--storage", storage, "--mlflow", uri, "--data-dir", cifar10_dir, "--out",
            in_tmp / "studies", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert r.output.count("threads, log") == 2 and "exit 0" in r.output
    logs = sorted((in_tmp / "studies" / "tiny" / "workers").glob("worker-*.log"))
    assert len(logs) == 2
    # the front is tested and published once, by the parent: workers doing it too wrote the same files at once
    assert not any("(front): test" in log.read_text() for log in logs)
    st = open_study(load_space(path), storage, create=False)
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5 and len({t.number for t in st.trials}) == len(st.trials)
    one_line_error(run("study", "run", path, "--storage", storage, "--data-dir", in_tmp / "nowhere", "--workers", "2"),
                   "nowhere")  # preflight once, before any worker starts


def test_a_study_killed_before_its_front_was_tested_measures_it_on_the_next_run(base, cifar10_dir, in_tmp,
                                                                                 monkeypatch):
    """Trials never read the test set; the front's test accuracies are measured at the end, and a run that ended
    before that (killed) leaves them to the next `study run`, which measures each once and nothing else."""
    from orchestrator.study import runner
    from orchestrator.study.pareto import rows

    path = space_file(in_tmp, base, budget={"trials": 2})
    kw = dict(storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir, out_dir=in_tmp / "s",
              tracking_uri=f"sqlite:///{in_tmp}/m.db")
    monkeypatch.setattr(runner, "test_front", lambda *a, **k: [])  # killed between the last trial and the test
    st = run_study(load_space(path), **kw)
    assert all(r["test_acc"] is None for r in rows(st))
    monkeypatch.undo()
    measured = []
    real = runner.test_front
    monkeypatch.setattr(runner, "test_front", lambda *a, **k: measured.append(real(*a, **k)) or measured[-1])
    st = run_study(load_space(path), **kw)  # the budget is spent: no trial runs, the front is tested
    front = [r["trial"] for r in rows(st) if r["pareto"]]
    assert measured == [front] and all((r["test_acc"] is not None) == r["pareto"] for r in rows(st))
    assert runner.test_front(st, cifar10_dir) == []  # each front trial once


def test_the_timeout_counts_the_start_points_measurement(base, cifar10_dir, in_tmp, monkeypatch):
    """`budget.timeout_minutes` bounds the whole `study run`: a start (e.g. the automatic one) that spends it
    leaves no time for a trial, and the study still ends cleanly with its (empty) Pareto files."""
    import time
    from types import SimpleNamespace

    from orchestrator.study import runner

    path = space_file(in_tmp, base, budget={"trials": 4, "timeout_minutes": 1})
    real = runner.start_points

    def slow_start(*a, **k):  # a start that takes the whole minute (the clock moved on instead of sleeping)
        moved = time.monotonic() + 61  # the runner's clock only
        monkeypatch.setattr(runner, "time", SimpleNamespace(monotonic=lambda: moved, perf_counter=time.perf_counter,
                                                            sleep=time.sleep, time=time.time))
        return real(*a, **k)
    monkeypatch.setattr(runner, "start_points", slow_start)
    st = run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir, out_dir=in_tmp / "s",
                   tracking_uri=f"sqlite:///{in_tmp}/m.db")
    assert runner.finished(st) == 0 and (in_tmp / "s" / "tiny" / "pareto" / "pareto.md").is_file()
    monkeypatch.undo()
    st = run_study(load_space(path), storage=f"sqlite:///{in_tmp}/o.db", data_dir=cifar10_dir, out_dir=in_tmp / "s",
                   tracking_uri=f"sqlite:///{in_tmp}/m.db")
    assert runner.finished(st) >= 1  # the same budget without the slow start runs a trial


def test_timeout_minutes_overrides_the_budget_for_one_run(base, cifar10_dir, in_tmp):
    """`--timeout-minutes` replaces `budget.timeout_minutes` for this run (a budget scaled to a machine): a
    timeout spent before the first trial runs none; the space's own (none) then runs its trials; 0 is refused."""
    path = space_file(in_tmp, base, budget={"trials": 2})
    kw = ["--data-dir", cifar10_dir, "--storage", f"sqlite:///{in_tmp}/o.db", "--mlflow", f"sqlite:///{in_tmp}/m.db",
          "--out", in_tmp / "s", "--quiet"]
    def complete():
        st = open_study(load_space(path), f"sqlite:///{in_tmp}/o.db", create=False)
        return status(st).get("COMPLETE", 0)

    r = run("study", "run", path, "--timeout-minutes", "0.00001", *kw)
    assert r.exit_code == 0 and complete() == 0, r.output
    r = run("study", "run", path, *kw)
    assert r.exit_code == 0 and complete() == 2, r.output
    one_line_error(run("study", "run", path, "--timeout-minutes", "0", *kw), "timeout-minutes")


def test_two_workers_on_sqlite_never_claim_the_same_waiting_trial(in_tmp, monkeypatch):
    """Both read the start point as WAITING before either sets it RUNNING (held there by a barrier): without
    the claim lock both would run it (optuna#4621, seen once in CI as two workers on trial 0)."""
    import threading

    import optuna
    from optuna.storages._rdb import models

    from orchestrator.study.runner import storage_for
    url = f"sqlite:///{in_tmp}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage_for(url))
    study.enqueue_trial({"x": 1.0})
    waiting = study.get_trials(deepcopy=False)[0]._trial_id
    both_read = threading.Barrier(2, timeout=2)
    read = models.TrialModel.find_or_raise_by_id

    def read_then_wait(*a, **k):
        trial = read(*a, **k)
        try:
            both_read.wait()
        except threading.BrokenBarrierError:  # the other worker is held at the lock: the claim is atomic
            pass
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id", staticmethod(read_then_wait))
    workers = [storage_for(url) for _ in range(2)]  # one storage (engine) per worker, as in two processes
    claimed = [None, None]

    def claim(k):
        claimed[k] = workers[k].set_trial_state_values(waiting, optuna.trial.TrialState.RUNNING)

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [False, True]


def test_a_dataset_row_inserted_by_another_worker_at_the_same_moment_is_linked_on_a_second_try():
    """Two local workers logging a study's dataset at once on SQLite: one insert fails on MLflow's UNIQUE
    constraint (seen in the two-worker test); the row exists then, so the second try links it. Another
    error still raises."""
    from mlflow.exceptions import MlflowException

    from orchestrator.study.tracking import Tracker

    class Client:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.errors:
                raise MlflowException(self.errors.pop(0))

    tracker = object.__new__(Tracker)
    tracker.client = Client(["(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id"])
    tracker.log_inputs("run", ["d"])
    assert tracker.client.calls == 2
    tracker.client = Client(["RESOURCE_DOES_NOT_EXIST: run"])
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        tracker.log_inputs("run", ["d"])


def test_only_the_study_creator_makes_the_mlflow_parent_and_the_others_wait_for_it(base, in_tmp):
    """Workers starting together: exactly one creates the study (the storage's unique name decides) and its
    parent run; one that loaded it waits for that run's id, and makes one itself only if none comes."""
    import threading

    from orchestrator.study import tracking
    from orchestrator.study.runner import create_or_load
    space = load_space(space_file(in_tmp, base, sampler={"name": "random", "seed": 0, "start": "none"}))
    storage = f"sqlite:///{in_tmp}/optuna.db"
    (study, created), (other, second) = create_or_load(space, storage), create_or_load(space, storage)
    assert (created, second) == (True, False)
    t = tracking.Tracker(f"sqlite:///{in_tmp}/m.db", "exp")
    got = []
    waiter = threading.Thread(target=lambda: got.append(t.parent(other, space.model_dump(), owner=False)))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not got  # no parent yet: the loader waits rather than make a second one
    run_id = t.parent(study, space.model_dump(), owner=True)
    waiter.join(timeout=30)
    assert got == [run_id]
    parents = t.client.search_runs([t.experiment_id], "tags.`orchestrator.kind` = 'study'")
    assert [r.info.run_id for r in parents] == [run_id]
    (lonely, _), = [create_or_load(space.model_copy(update={"name": "lonely"}), storage)]
    made = t.parent(lonely, space.model_dump(), owner=False, wait=0.3)  # its creator died before its parent
    assert made != run_id and lonely.user_attrs[tracking.PARENT_ATTR] == made


def _done(train: float | None, trial: float, trained: float):
    from types import SimpleNamespace as NS
    timings = {"trial": trial, **({} if train is None else {"train": train})}  # no step trained: no "train"
    return NS(state=NS(name="COMPLETE"), user_attrs={"timings": timings, "trained_epochs": trained})


def test_a_trials_seconds_are_predicted_from_the_epochs_the_finished_trials_trained(monkeypatch):
    from types import SimpleNamespace as NS

    from orchestrator.steps import step_epochs
    from orchestrator.study import runner
    han = {"steps": [{"prune": {"method": "han", "rounds": 3, "finetune": {"epochs": 0.5}}},
                     {"finetune": {"epochs": 2}}, {"quantize": {"finetune": {"epochs": 1}}}]}
    assert [step_epochs(s) for s in han["steps"]] == [1.5, 2, 1]  # 3 rounds x 0.5
    two = {"steps": [{"prune": {"finetune": {"epochs": 1}}}, {"quantize": {"finetune": {"epochs": 1}}}]}
    r = runner.TrialRunner.__new__(runner.TrialRunner)
    # 100 s for 1 epoch, 300 s for 2; a sibling whose fine-tune came from the step cache trained nothing, and
    # one whose every step was cached has no "train" at all: neither is a rate (a rate of ~0 s per epoch)
    trials = [_done(100, 110, 1), _done(300, 305, 2), _done(0.4, 5.4, 0), _done(None, 5.0, 0)]
    r.study = NS(get_trials=lambda deepcopy: trials)
    assert r.needs(two) == 125 * 2 + 5  # median 125 s per epoch; median 5 s outside training (10, 5, 5, 5)
    assert r.needs({"steps": [{"prune": {"finetune": {"epochs": 0}}}]}) == 5
    trials[:] = [_done(0.4, 5.4, 0)]
    assert r.needs(two) is None  # nothing trained yet: no estimate (the trial starts)
    r.space = NS(budget=NS(timeout_minutes=1))
    r.study, r.log, r.out_of_time = NS(get_trials=lambda deepcopy: [_done(100, 110, 1)]), NS(info=print), False
    monkeypatch.setattr(runner.time, "monotonic", lambda: 1000.0)
    trial = NS(user_attrs={"proposed_by": "auto"}, number=3)
    r.deadline = 1000 + 210  # 2 epochs: 200 s + 10 s outside training end at the deadline: it starts
    r.check_time(trial, two)
    r.deadline = 1000 + 209
    r.study.stop = lambda: None
    with pytest.raises(runner._optuna().TrialPruned):
        r.check_time(trial, two)  # 210 s > a whole 60 s timeout: stopped, and not given back to the queue
    assert r.out_of_time


def test_a_start_point_that_would_end_past_the_timeout_waits_for_the_next_run(base, cifar10_dir, in_tmp,
                                                                                 monkeypatch):
    from orchestrator.study import runner
    points = [{"method": "global_magnitude", "ratio": r, "finetune_epochs": 0, "kd": False, "bits": 4, "act_bits": 32}
              for r in (0.3, 0.6)]
    space = load_space(space_file(in_tmp, base, sampler={"name": "random", "seed": 0, "start": points,
                                                         "veto": None}, budget={"trials": 4, "timeout_minutes": 60}))
    kw = dict(storage=f"sqlite:///{in_tmp}/optuna.db", data_dir=cifar10_dir, out_dir=in_tmp / "s",
              tracking_uri=f"sqlite:///{in_tmp}/m.db")
    # after the first trial, the next is predicted to need all but a second of the hour: past the deadline,
    # but within a whole timeout, so the next run gets it
    monkeypatch.setattr(runner.TrialRunner, "needs", lambda self, p: 3599 if runner.finished(self.study) else None)
    st = run_study(space, **kw)
    states = {t.number: t.state.name for t in st.trials}
    assert runner.finished(st) == 1 and list(states.values()).count("PRUNED") == 1  # stopped at the second
    (waiting,) = [t for t in st.trials if t.state.name == "WAITING"]
    assert waiting.system_attrs["fixed_params"]["ratio"] == 0.6 and waiting.user_attrs["proposed_by"] == "start"
    monkeypatch.undo()
    st = run_study(space, **kw)
    again = [t for t in st.trials if t.state.name == "COMPLETE" and t.params.get("ratio") == 0.6
             and t.user_attrs.get("proposed_by") == "start"]
    assert len(again) == 1 and runner.finished(st) == 4
