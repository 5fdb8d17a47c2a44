"""Study commands: study run / resume / status / pareto."""

from __future__ import annotations

import time

from pathlib import Path

import click

from ..errors import OrchestratorError
from .common import _device, _one_line_errors, data_dir_option, device_option, main, with_options

storage_option = click.option("--storage", default=None,
                              help="Optuna storage URL (default: sqlite:///runs/studies.db; postgresql://... "
                                   "for several machines).")
base_option = with_options([
    click.option("--base", type=click.Path(dir_okay=False), default=None,
                 help="Run the space on this checkpoint instead of its `base` (the same file on another model), "
                      "as the study <name>-<checkpoint stem> unless --name is given."),
    click.option("--name", default=None, help="The study's name instead of the space's `name`.")])
mlflow_option = click.option("--mlflow", "tracking_uri", default=None,
                             help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db + ./mlruns).")


@main.group()
def study():
    """Optuna multi-objective studies over compression pipelines, tracked in MLflow."""


def _pareto_command(space_file, storage, base=None, name=None) -> str:
    """The command that rewrites a study's Pareto files (the plots' footer): it names the study as it was run."""
    return (f"orchestrator study pareto {space_file} --storage {storage}" + (f" --base {base}" if base else "")
            + (f" --name {name}" if name else ""))


def _run(space_file, storage, tracking_uri, data_dir, device, out_dir, trials, quiet, must_exist, workers=1,
         base=None, name=None, timeout=None):
    from ..study import DEFAULT_STORAGE, load_space, open_study, run_study, status
    from ..study.pareto import rows

    space = load_space(space_file, base, name)
    if timeout is not None:  # the resolved budget is what the study's MLflow run logs
        space.budget.timeout_minutes = timeout
    storage = storage or DEFAULT_STORAGE
    if must_exist:
        open_study(space, storage, create=False)
    if workers > 1:
        return _run_workers(space, space_file, storage, tracking_uri, data_dir, device, out_dir, trials, workers,
                            base, name, timeout)

    def echo(number, params, values):
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        click.echo(f"trial {number}: {shown} -> " + ", ".join(
            f"{o} {v:.4g}" for o, v in zip(space.objectives, values)))

    st = run_study(space, storage=storage, data_dir=data_dir, out_dir=out_dir, tracking_uri=tracking_uri,
                   device=_device(device), trials=trials, progress=not quiet, on_trial=echo,
                   footer=_pareto_command(space_file, storage, base, name))
    table = Path(out_dir) / space.name / "pareto" / "pareto.md"
    click.echo(f"{space.name}: {status(st)}; Pareto front: {sum(r['pareto'] for r in rows(st))} trials -> {table}")
    views = st.user_attrs.get("mlflow_views", {})
    if views:
        server = (tracking_uri or "").startswith("http")
        host = tracking_uri.rstrip("/") if server else "http://127.0.0.1:5000"
        import mlflow

        store = tracking_uri or mlflow.get_tracking_uri()  # MLflow's own (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)
        click.echo(("MLflow" if server else f"MLflow (after `mlflow ui --backend-store-uri {store}`)")
                   + f": trials {host}/{views['table']}\n  accuracy vs footprint {host}/{views['chart']}")


def _run_workers(space, space_file, storage, tracking_uri, data_dir, device, out_dir, trials, workers, base=None,
                 name=None, timeout=None):
    """`workers` local processes of this command, cores/N threads each; preflight and the summary once."""
    from ..study import open_study, status
    from ..study.runner import BEGAN_ENV, create_or_load, preflight, publish, start_points, test_front
    from ..study.tracking import PARENT_ATTR, Tracker
    from ..study.workers import run_workers

    began = str(time.time())  # the workers' timeout counts the start points measured here
    preflight(space, data_dir, out_dir, storage, tracking_uri)
    start = start_points(space, storage, data_dir, out_dir, _device(device))  # measured once, not per worker
    study, created = create_or_load(space, storage, start)  # the study, the MLflow store, experiment and parent
    Tracker(tracking_uri, space.name).parent(study, space.model_dump(), owner=created)  # run are created once
    # here, so the workers neither race through the schema migrations nor wait for a parent
    argv = ["study", "run", str(space_file), "--storage", storage, "--out", str(out_dir), "--device", device,
            "--quiet", *(["--mlflow", tracking_uri] if tracking_uri else []),
            *(["--data-dir", str(data_dir)] if data_dir else []), *(["--trials", str(trials)] if trials else []),
            *(["--base", str(base)] if base else []), *(["--timeout-minutes", str(timeout)] if timeout else []),
            "--name", space.name]
    code = run_workers(argv, workers, Path(out_dir) / space.name / "workers", echo=click.echo, env={BEGAN_ENV: began})
    st = open_study(space, storage, create=False)
    click.echo(f"{space.name}: {status(st)}")
    tracker = Tracker(tracking_uri, space.name)
    if not code or any(t.state.name == "COMPLETE" for t in st.get_trials(deepcopy=False)):
        test_front(st, data_dir, _device(device), tracker)  # workers leave the front test and files to this one
        files = publish(st, space, tracker, out_dir,  # once, after every worker (a failed one too)
                        footer=_pareto_command(space_file, storage, base, name))
        click.echo(f"Pareto front -> {files[-1]}")
    else:  # every worker failed before a trial finished: the study's run says so
        tracker.client.set_terminated(st.user_attrs[PARENT_ATTR], "FAILED")
    if code:
        raise OrchestratorError(f"a worker exited with code {code}; its log is under {Path(out_dir) / space.name}/workers/")


_common = with_options([
    storage_option, mlflow_option, data_dir_option, device_option, base_option,
    click.option("--out", "out_dir", default="runs/studies", show_default=True,
                 help="Trial checkpoints, exports and Pareto files go under OUT/<study name>/."),
    click.option("--trials", type=click.IntRange(min=1), default=None,
                 help="At most this many trials now (default: up to the budget)."),
    click.option("--timeout-minutes", "timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="This run's budget.timeout_minutes instead of the space's (e.g. the budget scaled to "
                      "this machine's epoch time)."),
    click.option("--quiet", is_flag=True, help="No training progress output."),
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Local worker processes sharing the study, each with cores/N torch "
                      "threads (more than one needs more than 2 cores to pay off)."),
])


def _run_command(name: str, must_exist: bool, doc: str):
    @study.command(name, help=doc)
    @click.argument("space_file", type=click.Path(dir_okay=False))
    @_common
    @_one_line_errors
    def command(space_file, storage, tracking_uri, data_dir, device, base, name, out_dir, trials, timeout, quiet,
                workers):
        _run(space_file, storage, tracking_uri, data_dir, device, out_dir, trials, quiet, must_exist=must_exist,
             workers=workers, base=base, name=name, timeout=timeout)

    return command


study_run = _run_command("run", False, "Run (or continue) the study a search-space YAML describes, up to its budget.")
study_resume = _run_command("resume", True, "Continue an existing study (an error if there is none by that name).")


@study.command("status")
@click.argument("space_file", type=click.Path(dir_okay=False))
@storage_option
@base_option
@_one_line_errors
def study_status(space_file, storage, base, name):
    """Trial counts by state and the current Pareto front."""
    from ..study import DEFAULT_STORAGE, load_space, open_study, status
    from ..study.pareto import rows

    space = load_space(space_file, base, name)
    st = open_study(space, storage or DEFAULT_STORAGE, create=False)
    click.echo(f"{space.name}: {status(st)} of budget {space.budget.trials}")
    for r in rows(st):
        if r["pareto"]:
            click.echo(f"  trial {r['trial']}: {r['label']}: val {100 * r['val_acc']:.2f}%, "
                       f"footprint {r['footprint_bytes']:,.0f} B")
    for t in st.get_trials(deepcopy=False):
        if t.state.name == "FAIL":
            click.echo(f"  trial {t.number} failed: {t.user_attrs.get('fail_reason', 'worker lost (no heartbeat)')}")


def _publish(space_file, storage, tracking_uri, out_dir, kind: str, build, base=None, name=None) -> list:
    """Open a study with finished trials, write files with `build(study, space, out)`, log them to MLflow."""
    from ..study import DEFAULT_STORAGE, load_space, open_study
    from ..study.tracking import PARENT_ATTR, Tracker

    space = load_space(space_file, base, name)
    storage = storage or DEFAULT_STORAGE
    st = open_study(space, storage, create=False)
    if not any(t.state.name == "COMPLETE" for t in st.get_trials(deepcopy=False)):
        raise OrchestratorError(f"study {space.name!r} has no finished trial yet")
    out = Path(out_dir or Path("runs/studies") / space.name / kind)
    from ..study.pareto import rows

    untested = [r["trial"] for r in rows(st) if r["pareto"] and r["test_acc"] is None]
    if untested:  # a study run that ended before its front was tested (killed, or a trial still running)
        click.echo(f"warning: front trials {', '.join(map(str, untested))} have no test accuracy yet (n/a, and no "
                   f"peer counts as dominated by them): `orchestrator study run` again measures them", err=True)
    files = build(st, space, out, storage)
    if PARENT_ATTR in st.user_attrs:
        Tracker(tracking_uri, space.name).log_parent_files(st.user_attrs[PARENT_ATTR], files, kind)
    return files


def _publish_options(kind: str):
    options = with_options([click.argument("space_file", type=click.Path(dir_okay=False)), storage_option,
                            mlflow_option, base_option, click.option("--out", "out_dir", default=None,
                                                        help=f"Default: runs/studies/<name>/{kind}"),
                            click.option("--peers", "peers_file", default=None, type=click.Path(dir_okay=False),
                                         help="Peer points measured on the same base (the JSON lines "
                                              "benchmarks/peers.py writes), shown beside the front.")])
    return lambda fn: _one_line_errors(options(fn))


@study.command("pareto")
@_publish_options("pareto")
@click.option("--register", "register_as", default=None, metavar="NAME",
              help="Also register a front model in the MLflow Model Registry under NAME (default model: the "
                   "smallest front model within 1 test point of the base).")
@click.option("--trial", type=click.IntRange(min=0), default=None, help="With --register: this trial's model.")
def study_pareto(space_file, storage, tracking_uri, base, name, out_dir, peers_file, register_as, trial):
    """Write the Pareto front (PNG, interactive HTML, CSV, Markdown) and log it to the study's MLflow run."""
    from ..study.pareto import export_pareto, rows

    if trial is not None and not register_as:
        raise OrchestratorError("--trial picks the model to register: give --register NAME too")
    picked = {}

    def build(st, space, out, storage):
        if register_as:  # pick before writing anything: a bad --trial fails first
            from ..study.mlmodel import pick_front_model
            picked["row"] = pick_front_model(rows(st), trial)
        return export_pareto(st, out, footer=_pareto_command(space_file, storage, base, name),
                             peers_file=peers_file)

    files = _publish(space_file, storage, tracking_uri, out_dir, "pareto", build, base, name)
    click.echo("\n".join(str(f) for f in files))
    if register_as:
        from ..study.mlmodel import register
        name, version = register(tracking_uri, register_as, picked["row"])
        click.echo(f"registered trial {picked['row']['trial']} ({picked['row']['label']}) as {name!r} version {version}")


@main.command("report")
@_publish_options("report")
def report(space_file, storage, tracking_uri, base, name, out_dir, peers_file):
    """Presentation material from a finished study: HTML report, offline slides, figures (PNG, SVG)."""
    from ..report import build_report

    files = _publish(space_file, storage, tracking_uri, out_dir, "report", lambda st, space, out, storage: build_report(
        st, space, out, space_file=space_file, storage=storage, peers_file=peers_file)["files"], base, name)
    click.echo(f"{files[0]}, {files[1]} ({len(files)} files)")
