"""Optuna studies: a named study in a storage URL, each trial a pipeline, failures recorded, resumable.

Storage: an SQLite file by default (embedded, no server) or any RDB URL (PostgreSQL for several
machines). Trials carry a heartbeat, so a worker killed mid-trial leaves a trial that the next
`study run` marks failed and retries once; finished trials are never redone. `study run` with an
existing name continues the study up to its budget instead of starting over.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import time
import traceback
from collections import Counter
from pathlib import Path

from ..errors import OrchestratorError
from ..paths import sqlite_file
from ..pipeline import run_pipeline
from ..steps import step_epochs
from .mlview import write_view
from .pareto import TEST_ATTR, export_pareto, failed_own, ran, rows
from .preflight import DEFAULT_STORAGE, check_server, environmental, preflight  # noqa: F401  (the runner's API)
from .space import SearchSpace, _listed
from .followup import RESERVE_ATTR, FollowUp, enqueue
from .tracking import CREATED_ATTR, PARENT_ATTR, Tracker

HEARTBEAT_ENV = "ORCHESTRATOR_HEARTBEAT_S"  # seconds between trial heartbeats (default 30; grace 3x)


def _optuna():
    import optuna

    # Optuna logs each failed trial with its traceback at WARNING; the runner logs one line per failure itself
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def storage_for(url: str):
    """An Optuna RDB storage with heartbeats; a bad URL or unreachable server is one clear error."""
    optuna = _optuna()
    if (file := sqlite_file(url)) is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    last = None
    for _ in range(5):  # workers starting together race to create the schema: the losers retry
        try:
            with warnings.catch_warnings():  # heartbeats are flagged experimental; resume relies on them
                warnings.simplefilter("ignore")
                beat = max(1, int(os.environ.get(HEARTBEAT_ENV, "30")))
                # an unreachable server fails in seconds, not after the system's TCP timeout
                engine = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else None
                kwargs = dict(engine_kwargs=engine, heartbeat_interval=beat, grace_period=3 * beat,
                              heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
                if file is None:
                    return optuna.storages.RDBStorage(url, **kwargs)
                from .storage import ClaimLockedStorage

                return ClaimLockedStorage(url, file.with_name(file.name + ".claims.lock"), **kwargs)
        except Exception as exc:
            last = exc
            if "UniqueViolation" not in str(exc) and "already exists" not in str(exc):
                break
            time.sleep(0.5 + random.random())
    raise OrchestratorError(f"cannot open study storage {url!r}: {str(last).splitlines()[0][:200]}; "
                            "allowed: sqlite:///FILE.db or postgresql://USER:PASS@HOST/DB") from None


def _absent(storage: str) -> bool:
    """An SQLite storage whose file does not exist: a command that only reads finds nothing there and must not
    create it (Optuna would create the file and its schema)."""
    return (file := sqlite_file(storage)) is not None and not file.is_file()


def _sampler(space: SearchSpace):
    optuna = _optuna()
    s = space.sampler
    if s.name == "grid":
        inner = optuna.samplers.GridSampler(space.grid(), seed=s.seed)
    elif s.name == "tpe":  # its start-up (random) trials are the start points: the model is fit from then on
        inner = optuna.samplers.TPESampler(seed=s.seed, multivariate=True, n_startup_trials=_startup(space))
    elif s.name == "gp":
        inner = optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=_startup(space))
    elif s.name == "random":
        inner = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        inner = optuna.samplers.NSGAIISampler(population_size=s.population, seed=s.seed)
    from .sampler import SearchSampler

    return SearchSampler(inner, s.seed, space.start_values())


def _startup(space: SearchSpace) -> int:
    """Trials before a model-based sampler fits its model: the start points when there are some (at least 2,
    so the first fit sees a comparison), else Optuna's default of 10 random ones."""
    from .autostart import default_points

    n = len(space.sampler.points) + (default_points(space) if space.sampler.start == "auto" else 0)
    return max(2, n) if n else 10


def open_study(space: SearchSpace, storage: str = DEFAULT_STORAGE, create: bool = True, start: list | None = None):
    """The study (created when `create`); a new one gets its start points enqueued once: `start` (from
    `start_points`), else the space's hand-written ones. Each records how it was proposed (`proposed_by`)."""
    optuna = _optuna()
    if not create and _absent(storage):
        file = sqlite_file(storage)
        raise OrchestratorError(f"no study named {space.name!r} in {storage} "
                                f"({file} {'is a folder, not a database file' if file.is_dir() else 'does not exist'})")
    if not create:
        try:
            return optuna.load_study(study_name=space.name, storage=storage_for(storage), sampler=_sampler(space))
        except KeyError:
            raise OrchestratorError(f"no study named {space.name!r} in {storage}") from None
    return create_or_load(space, storage, start)[0]


def create_or_load(space: SearchSpace, storage: str = DEFAULT_STORAGE, start: list | None = None):
    """`open_study`'s study, and whether this call created it: of workers starting together exactly one
    does (the storage's unique study name decides), and it alone creates the MLflow parent run."""
    optuna, st = _optuna(), storage_for(storage)
    try:
        study = optuna.create_study(study_name=space.name, storage=st, sampler=_sampler(space),
                                    directions=space.directions())
        study.set_user_attr(CREATED_ATTR, time.time())
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=space.name, storage=st, sampler=_sampler(space)), False
    _check_same_space(study, space, storage)
    start = [{"params": p, "proposed_by": "start"} for p in space.sampler.points] if start is None else start
    if start and "start_enqueued" not in study.user_attrs:  # once per study, not per worker
        study.set_user_attr("start_enqueued", True)
        kept = [p for p in start if p.get("reserve")]
        if kept:  # the predicted front below the start points: proposed later, one at a time (`followup`)
            study.set_user_attr(RESERVE_ATTR, [{k: v for k, v in p.items() if k != "reserve"} for p in kept])
        for point in [p for p in start if not p.get("reserve")]:
            enqueue(study, point)
    return study, created


def _started(space: SearchSpace, storage: str) -> bool:
    if _absent(storage):
        return False  # nothing to read, and nothing is created before the start points are known
    try:
        study = _optuna().load_study(study_name=space.name, storage=storage_for(storage))
    except KeyError:
        return False
    return "start_enqueued" in study.user_attrs or len(study.get_trials(deepcopy=False)) > 0


def start_points(space: SearchSpace, storage: str = DEFAULT_STORAGE, data_dir=None, out_dir="runs/studies",
                 device="cpu") -> list[dict]:
    """What a new study runs first, each {'params', 'proposed_by'[, predicted values]}: the hand-written
    points ("start"), a named study's feasible front ("warm-start:NAME") and the automatic points ("auto",
    `autostart`). Computed and checked before the study is created; nothing for a study already started."""
    if _started(space, storage):
        return []
    out = [{"params": p, "proposed_by": "start"} for p in space.sampler.points]
    if space.sampler.warm_start:
        out += [{"params": p, "proposed_by": f"warm-start:{space.sampler.warm_start}"}
                for p in warm_points(space, storage)]
    if space.sampler.start == "auto" and space.sampler.name != "grid":  # a grid runs every point anyway
        from .autostart import auto_start

        log = logging.getLogger("orchestrator.study")
        plan = auto_start(space, data_dir, Path(out_dir) / space.name / "cache", device, log.info)
        out += [{"params": p["params"], "proposed_by": "auto", "predicted_drop": p["predicted_drop"],
                 "predicted_footprint_bits": p["footprint_bits"],
                 **({"screen_acc": p["screen_acc"]} if "screen_acc" in p else {})} for p in plan["predicted"]]
        out += [{"params": p["params"], "proposed_by": "descent", "predicted_drop": p["predicted_drop"],
                 "predicted_footprint_bits": p["footprint_bits"], "reserve": True} for p in plan["reserve"]]
    return out


def warm_points(space: SearchSpace, storage: str) -> list[dict]:
    """The feasible front of the study `sampler.warm_start` (same storage), as points of this space; a study
    that does not exist, or whose parameters this space cannot take, is one error naming what differs."""
    name = space.sampler.warm_start
    try:
        if _absent(storage):
            raise KeyError(name)
        source = _optuna().load_study(study_name=name, storage=storage_for(storage))
    except KeyError:
        raise OrchestratorError(f"sampler.warm_start: no study named {name!r} in {storage}") from None
    params = space.suggested()
    numbers = {r["trial"] for r in rows(source) if r["pareto"]}
    front = [t for t in source.get_trials(deepcopy=False) if t.number in numbers]
    if not front:
        raise OrchestratorError(f"sampler.warm_start: study {name!r} has no feasible finished trial to start from")
    points = [dict(t.params) for t in front]
    for p in points:
        missing = [k for k in params if k not in p] or [k for k in p if k not in params]
        if missing:
            raise OrchestratorError(f"sampler.warm_start: study {name!r} and this space differ in parameter "
                                    f"{missing[0]!r}; a warm start needs the same dimensions")
        for k, v in p.items():
            choices = params[k]
            inside = _listed(v, choices) if isinstance(choices, list) else choices.low <= v <= choices.high and (
                choices.step is None or abs((v - choices.low) / choices.step - round((v - choices.low) / choices.step))
                < 1e-6)
            if not inside:
                raise OrchestratorError(f"sampler.warm_start: study {name!r} ran {k}={v!r}, outside this space's "
                                        f"{_shown_choices(choices)}")
    return points


def _shown_choices(choices) -> str:
    return str(choices) if isinstance(choices, list) else f"{choices.low}..{choices.high}"


def _check_same_space(study, space: SearchSpace, storage: str) -> None:
    """A study continues only under the parameters it ran with: Optuna rejects a parameter whose choices or
    range changed in the middle of a trial, so the change is named here, before any trial runs."""
    dists = _optuna().distributions
    expected = {k: dists.CategoricalDistribution(v) if isinstance(v, list) else
                dists.FloatDistribution(v.low, v.high, step=v.step) for k, v in space.suggested().items()}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if name in expected and dist != expected[name]:
                raise OrchestratorError(
                    f"study {space.name!r} in {storage} ran {name} over {_shown(dist)}, this space has "
                    f"{_shown(expected[name])}: give the changed space a new name, or another --storage")


def _shown(dist) -> str:
    return str(list(dist.choices)) if hasattr(dist, "choices") else f"{dist.low}..{dist.high} step {dist.step}"


def finished(study) -> int:
    """Trials that count against the budget: complete ones, and ones that failed for a reason of their own
    (a trial lost with a killed worker is retried instead). A repeat of a finished configuration, answered
    from its record, costs nothing and does not count."""
    return sum(ran(t) or failed_own(t) for t in study.get_trials(deepcopy=False))


def same_pipeline(study, pipeline: dict):
    """A complete, original trial of the study that ran exactly this pipeline, or None."""
    return next((t for t in study.get_trials(deepcopy=False)
                 if ran(t) and t.user_attrs.get("pipeline") == pipeline), None)


def constraint_of(space: SearchSpace, val_acc: float, base_val_acc: float) -> float | None:
    """Optuna constraint value (<= 0 feasible): how far the accuracy drop exceeds the space's floor."""
    limit = space.constraints.max_accuracy_drop
    return None if limit is None else (base_val_acc - val_acc) - limit


def objectives_of(space: SearchSpace, result: dict) -> list[float]:
    f = result["final"]
    values = {"accuracy": result["steps"][-1]["eval_acc"], "footprint": f["total_bits"] / 8, "macs": f["macs_sparse"]}
    return [values[o] for o in space.objectives]


def run_study(space: SearchSpace, *, storage: str = DEFAULT_STORAGE, data_dir=None, out_dir="runs/studies",
              tracking_uri: str | None = None, device="cpu", trials: int | None = None, progress=False,
              on_trial=None, footer: str = ""):
    """Run trials until the budget's finished-trial count (or `trials` more, or the timeout); returns the study.

    The study's MLflow parent run is RUNNING while a worker runs trials, gets the Pareto files when the
    worker is done, and ends FINISHED (FAILED on an error, KILLED on an interrupt). The budget's timeout
    counts from here: the automatic start points' measurement is part of it."""
    began = _began()
    datasets = preflight(space, data_dir, out_dir, storage, tracking_uri)
    study, created = create_or_load(space, storage, start_points(space, storage, data_dir, out_dir, device))
    tracker = Tracker(tracking_uri, space.name)
    parent = tracker.parent(study, space.model_dump(), owner=created)
    tracker.client.update_run(parent, status="RUNNING")  # a resumed study's run is running again
    searched = [k for k, v in space.suggested().items() if not isinstance(v, list) or len(v) > 1]
    study.set_user_attr("mlflow_views", write_view(tracker.client, tracker.experiment_id, parent, space.name,
                                                   searched))
    try:
        TrialRunner(space, study, tracker, parent, data_dir, out_dir, device, progress, on_trial, datasets).run(
            trials, began)
        tracker.close_lost(study)  # runs of trials whose worker was killed end FAILED, like their trials
        # the last worker to finish tests the front and publishes; a local worker (`--workers N`) leaves both to
        # its parent, which runs them once after every worker (two at once wrote the same Pareto files)
        if not os.environ.get(BEGAN_ENV) and not any(t.state.name == "RUNNING"
                                                     for t in study.get_trials(deepcopy=False)):
            test_front(study, data_dir, device, tracker)  # else another worker is still at it: the last one
            publish(study, space, tracker, out_dir, footer)  # measures the front's test accuracy and publishes
    except BaseException as exc:
        tracker.client.set_terminated(parent, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return study


BEGAN_ENV = "ORCHESTRATOR_STUDY_BEGAN"  # wall-clock start (time.time()) of a `study run --workers N` parent


def _began() -> float:
    """When this `study run` began, as a `time.monotonic()`: now, or the parent's start for a worker (whose
    parent measured the start points before launching it)."""
    wall = os.environ.get(BEGAN_ENV)
    now = time.monotonic()
    try:
        return now - max(0.0, time.time() - float(wall)) if wall else now
    except ValueError:
        return now


def test_front(study, data_dir=None, device="cpu", tracker: Tracker | None = None) -> list[int]:
    """The test accuracy of every front trial's exported model that has none yet, measured once at the end.

    A trial measures only what the search reads (validation accuracy, footprint); the test set is read for
    the models a study answers with, never for selection. Each value goes in a study attribute (`rows`
    reads it), the trial's record file and its MLflow run as it is measured, so a killed run measures only
    the rest next time. Returns the trials measured."""
    todo = [r for r in rows(study) if r["pareto"] and r["test_acc"] is None]
    if not todo:
        return []
    from ..data import load_split
    from ..footprint.export import load_export
    from ..train import evaluate
    from ..paths import read_json, write_json

    trials, split = {t.number: t for t in study.get_trials(deepcopy=False)}, None
    log = logging.getLogger("orchestrator.study")
    measured = []
    for r in todo:
        export = Path(trials[r["trial"]].user_attrs["export"])
        try:
            model, header = load_export(export)
        except Exception as exc:  # a file deleted or damaged since: the rest is still measured and published
            log.warning("trial %d: cannot measure its test accuracy: %s: %s", r["trial"], type(exc).__name__, exc)
            continue
        split = split or load_split(header["dataset"], "test", data_dir)
        acc = evaluate(model.to(device), split, header["normalization"], device)["acc"]
        study.set_user_attr(f"{TEST_ATTR}{r['trial']}", acc)
        measured.append(r["trial"])
        record = read_json(export.with_suffix(".json"), None)
        if record is not None:
            record["final"]["test_acc"] = acc
            write_json(export.with_suffix(".json"), record)
        if tracker is not None and r.get("mlflow_run_id"):
            tracker.client.log_metric(r["mlflow_run_id"], "test_acc", acc)
        log.info("trial %d (front): test %.2f%%", r["trial"], 100 * acc)
    return measured


def publish(study, space: SearchSpace, tracker: Tracker, out_dir, footer: str = "") -> list[Path]:
    """The end of a study's run: the Pareto files written and logged to its MLflow run, which ends FINISHED."""
    parent = study.user_attrs[PARENT_ATTR]
    files = export_pareto(study, Path(out_dir) / space.name / "pareto", footer=footer)
    tracker.log_parent_files(parent, files, "pareto")
    tracker.client.set_terminated(parent, "FINISHED")
    return files


class TrialRunner:
    """One worker's trials of a study, until the budget is spent: each suggested pipeline run and recorded in
    Optuna and MLflow; a repeat of a finished configuration answered from its record; a sampler proposal the
    screen predicts dominated vetoed (`sampler.veto`); a failure recorded with its reason, and an
    environmental one (disk, data, servers) stopping the study without spending budget."""

    OWN = ("pipeline", "mlflow_run_id", "checkpoint", "export", "timings", "proposed_by", "predicted_drop",
           "predicted_footprint_bits", "screen_acc", "screen_footprint_bits", "follows",
           "trained_epochs")  # what a repeat does not copy
    ENQUEUED = ("proposed_by", "predicted_drop", "predicted_footprint_bits", "screen_acc", "follows")  # a point's own

    def __init__(self, space: SearchSpace, study, tracker: Tracker, parent: str, data_dir, out_dir, device,
                 progress=False, on_trial=None, datasets=()):
        from .autostart import Veto

        self.space, self.study, self.tracker, self.parent = space, study, tracker, parent
        self.data_dir, self.out, self.device = data_dir, Path(out_dir) / space.name, device
        self.progress, self.on_trial, self.datasets = progress, on_trial, datasets
        self.log = logging.getLogger("orchestrator.study")
        self.duplicates: list[int] = []  # proposals answered from a finished trial's record
        self.vetoed: list[int] = []  # proposals the screen predicted dominated or infeasible
        self.stopped: list[str] = []  # why an environmental failure stopped the study
        self.most_idle = max(10, space.budget.trials)  # proposals in a row that ran nothing: the study gives up
        self.idle_before = 0  # proposals that ran nothing before the last trial that trained
        self.target = space.budget.trials
        self.deadline: float | None = None  # time.monotonic() by which trials end (`run`, `check_time`)
        self.out_of_time = False  # the next trial would have ended past the deadline: no more start
        vetoes = space.sampler.veto is not None and space.sampler.name != "grid"
        self.veto = Veto(space, data_dir, device) if vetoes else None
        auto = space.sampler.start == "auto" and space.sampler.name != "grid"
        self.follow = FollowUp(space, self.veto.accuracy if self.veto else None) if auto else None

    def idle(self) -> int:
        return len(self.duplicates) + len(self.vetoed)

    def exhausted(self) -> bool:
        """More proposals in a row than `most_idle` ran nothing (repeats, vetoes: a second each, so a total
        would end a study that still finds trials to train; run 15 stopped 8 minutes early that way)."""
        return self.idle() - self.idle_before > self.most_idle

    def run(self, trials: int | None = None, began: float | None = None) -> None:
        """Trials until the budget's finished-trial count (or `trials` more, or the timeout from `began`, a
        `time.monotonic()`, default now: no trial starts after it); then the front tagged in MLflow."""
        study, space = self.study, self.space
        warning = space.validation_warning()
        if warning:
            self.log.warning("study %s: %s", space.name, warning)
        minutes = space.budget.timeout_minutes
        self.deadline = (time.monotonic() if began is None else began) + minutes * 60 if minutes else None
        if trials is not None:
            self.target = min(space.budget.trials, finished(study) + trials)
        while finished(study) < self.target and not self.exhausted() and not self.out_of_time:
            self.follow_up(study)  # a study resumed between a start point and its follow-up
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            before, repeats = finished(study), self.idle()
            study.optimize(self.objective, n_trials=self.target - before, timeout=left, catch=(Exception,),
                           callbacks=[self.stop_at_budget, self.follow_up])
            if self.stopped:
                raise OrchestratorError(self.stopped[0].splitlines()[0][:600])
            if finished(study) == before and self.idle() == repeats:
                break  # nothing ran (the study was stopped); repeats alone are bounded by the loop's condition
        if finished(study) < self.target and self.exhausted():
            self.log.warning("study %s: stopped with %d of %d trials: the sampler proposed %d finished or vetoed "
                             "configurations in a row (%d repeats and %d vetoed in all); the space looks exhausted",
                             space.name, finished(study), self.target, self.idle() - self.idle_before,
                             len(self.duplicates), len(self.vetoed))
        pareto_ids = {r["mlflow_run_id"] for r in rows(study) if r["pareto"]}
        all_ids = [t.user_attrs["mlflow_run_id"] for t in study.get_trials(deepcopy=False)
                   if t.state.name == "COMPLETE" and "mlflow_run_id" in t.user_attrs]
        self.tracker.tag_pareto(pareto_ids, all_ids)

    def follow_up(self, study, _trial=None) -> None:
        """Enqueue the next descent or promotion point (`followup`) while the budget has room; a failure to
        (the screen) is logged and ends the follow-ups, never the study."""
        if self.follow is None or self.no_room(study):
            return
        try:
            point = self.follow.propose(study)
            if point is None or self.no_room(study):  # proposing screens candidates: seconds
                return
            enqueue(study, point)
        except Exception as exc:
            self.log.warning("study %s: no more follow-up points: %s: %s", self.space.name, type(exc).__name__, exc)
            self.follow = None
            return
        self.log.info("follow-up (%s of trial %d) enqueued: %s", point["proposed_by"], point["follows"],
                      point["params"])

    def no_room(self, study) -> bool:
        """Whether a point enqueued now would be left waiting in the study for its next run: past the
        timeout, the budget spent or taken by running trials, the study stopped or exhausted."""
        running = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
        return ((self.deadline is not None and time.monotonic() >= self.deadline) or bool(self.stopped)
                or self.out_of_time
                or self.exhausted() or finished(study) + running >= self.target)

    def stop_at_budget(self, study, _trial) -> None:  # workers share the study: stop once anyone spent the budget
        if finished(study) >= self.target or self.exhausted():
            study.stop()

    def objective(self, trial) -> list[float]:
        try:
            return self.run_trial(trial)
        except _optuna().TrialPruned:
            raise
        except Exception as exc:  # recorded with its reason; counts against the budget unless environmental
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
                self.log.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
            if environmental(exc):
                trial.set_user_attr("environmental", True)
                self.stopped.append(f"trial {trial.number} failed for a reason outside its configuration, so the "
                                    f"study stops (no budget spent; fix it and run again): {type(exc).__name__}: "
                                    f"{exc}")
                self.study.stop()
            raise

    def run_trial(self, trial) -> list[float]:
        pipeline = self.space.suggest(trial)
        dumped = pipeline.model_dump()
        trial.set_user_attr("pipeline", dumped)
        same = same_pipeline(self.study, dumped)
        if same is not None:
            return self.repeat(trial, same)
        t0 = time.perf_counter()
        if self.veto is not None and "proposed_by" not in trial.user_attrs:  # a sampler's proposal
            self.screen(trial)
        screen_s = time.perf_counter() - t0
        self.check_time(trial, dumped)
        t0 = time.perf_counter()
        run_id = self.tracker.start_trial(self.parent, self.space.name, trial.number, dict(trial.params))
        trial.set_user_attr("mlflow_run_id", run_id)
        mlflow_s = time.perf_counter() - t0
        ckpt = self.out / f"trial{trial.number:04d}.pt"
        try:
            result = run_pipeline(pipeline, data_dir=self.data_dir, out=ckpt, device=self.device,
                                  progress=self.progress, cache_dir=self.out / "cache", evaluate_steps=False,
                                  test=False)  # the test set is for the final front only (test_front)
        except Exception as exc:  # recorded as a failed trial with its reason; the study goes on
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            self.tracker.fail_trial(run_id, reason + "\n" + traceback.format_exc()[-3000:])
            self.log.warning("trial %d failed: %s", trial.number, reason)
            raise
        values = self.record(trial, result, ckpt)
        self.idle_before = self.idle()
        try:
            t1 = time.perf_counter()
            self.tracker.finish_trial(run_id, result, ckpt, Path(result["export"]), self.datasets)
            timings = {**result["timings"], "mlflow": mlflow_s + time.perf_counter() - t1, "screen": screen_s}
            trial.set_user_attr("timings", {**timings, "trial": time.perf_counter() - t0 + screen_s})
        except Exception as exc:  # the run must not stay RUNNING: FAILED with the reason, like a failed pipeline
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            self.tracker.fail_trial(run_id, f"logging to MLflow failed: {type(exc).__name__}: {exc}")
            raise
        if self.on_trial:
            self.on_trial(trial.number, trial.params, values)
        return values

    def repeat(self, trial, same) -> list[float]:
        """A finished configuration proposed again: its record, no budget, no run, no MLflow entry, no files;
        how it was proposed and what it cost stay the trial's own."""
        for k, v in same.user_attrs.items():
            if k not in self.OWN:
                trial.set_user_attr(k, v)
        trial.set_user_attr("duplicate_of", same.number)
        for k, v in same.constraints.items():
            trial.set_constraint(k, v)
        self.log.info("trial %d repeats trial %d: answered from its record", trial.number, same.number)
        self.duplicates.append(trial.number)
        return list(same.values)

    def needs(self, pipeline: dict) -> float | None:
        """Predicted seconds of a trial running `pipeline`: its epochs (all of them: an upper bound where the
        step cache holds a step) at the finished trials' median seconds per epoch they trained, plus their
        median seconds outside training; None before a trial has trained."""
        done = [t.user_attrs for t in self.study.get_trials(deepcopy=False) if ran(t) and "timings" in t.user_attrs]
        rates = [a["timings"].get("train", 0.0) / a["trained_epochs"] for a in done if a.get("trained_epochs")]
        if not rates:
            return None
        outside = statistics.median(a["timings"]["trial"] - a["timings"].get("train", 0.0) for a in done)
        return statistics.median(rates) * sum(step_epochs(s) for s in pipeline["steps"]) + outside

    def check_time(self, trial, pipeline: dict) -> None:
        """A trial predicted to end past the deadline does not start, and this worker stops: an enqueued point
        (start, follow-up) goes back to the queue for the next run, unless no whole timeout would hold it; a
        sampler's proposal is pruned."""
        need = None if self.deadline is None else self.needs(pipeline)
        over = None if need is None else time.monotonic() + need - self.deadline
        if over is None or over <= 0:
            return
        if "proposed_by" in trial.user_attrs and need <= self.space.budget.timeout_minutes * 60:
            # not followup.enqueue: its skip_if_exists would find these params in this very trial and skip them
            self.study.enqueue_trial(dict(trial.params), user_attrs={
                k: v for k, v in trial.user_attrs.items() if k in self.ENQUEUED})
        self.log.info("trial %d not started: predicted to end %.0f s after the timeout; the study stops",
                      trial.number, over)
        self.out_of_time = True
        self.study.stop()
        raise _optuna().TrialPruned("predicted to end after the timeout")

    def screen(self, trial) -> None:
        """Record the proposal's screen; raise TrialPruned when a finished trial beats it (`Veto`)."""
        verdict = self.veto(self.study.get_trials(deepcopy=False), dict(trial.params))
        for k, v in verdict.items():
            trial.set_user_attr(k, v)
        if "vetoed_by" in verdict:
            why = ("at no larger footprint" if verdict["veto_reason"] == "dominated"
                   else "at a larger footprint and fell below the accuracy floor")
            self.log.info("trial %d vetoed (screened %.1f%%): trial %d screened more than %s points higher %s",
                          trial.number, 100 * verdict["screen_acc"], verdict["vetoed_by"], self.space.sampler.veto, why)
            self.vetoed.append(trial.number)
            raise _optuna().TrialPruned(f"predicted {verdict['veto_reason']} by the screen")

    def record(self, trial, result: dict, ckpt: Path) -> list[float]:
        """The finished pipeline's results on the trial (user attributes, the accuracy-floor constraint)."""
        f, base = result["final"], result["steps"][0]
        val = result["steps"][-1]["eval_acc"]
        attrs = {k: f[k] for k in ("test_acc", "total_bits", "param_bits", "activation_peak_bits", "macs",
                                   "macs_sparse", "nonzero", "compression", "file_bytes", "realized")}
        attrs.update(val_acc=val, cache_hits=result["cache_hits"], trained_epochs=result["trained_epochs"],
                     base_val_acc=base["eval_acc"],
                     base_total_bits=base["total_bits"], base_test_acc=f["base_test_acc"], checkpoint=str(ckpt),
                     export=result["export"])
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        constraint = constraint_of(self.space, val, base["eval_acc"])
        if constraint is not None:
            trial.set_constraint("accuracy_drop", constraint)
        return objectives_of(self.space, result)


def status(study) -> dict:
    """Trial counts by state, in the order states first occur."""
    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


__all__ = ["DEFAULT_STORAGE", "open_study", "create_or_load", "start_points", "run_study", "status", "storage_for",
           "finished", "test_front"]
