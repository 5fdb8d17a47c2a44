"""docker/compose.yaml checked against the CLIs it calls: commands that parse, URLs that point at the
services, one database each for Optuna and MLflow, and every path a container reads or writes inside a
mounted volume. (Docker cannot run on CI; .ci/services.sh runs the same topology on loopback.)"""

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import click
import pytest
import yaml

from orchestrator.cli.studies import study_run
from orchestrator.study import load_space

ROOT = PurePosixPath(__file__).parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(open(DOCKER / "compose.yaml"))["services"]


def mounts(service) -> dict[PurePosixPath, tuple[PurePosixPath | str, bool]]:
    """Container path -> (host path or named volume, read-only)."""
    out = {}
    for v in service.get("volumes", []):
        host, target, *mode = v.split(":")
        src = DOCKER / host if host.startswith(".") else host
        out[PurePosixPath(target)] = (PurePosixPath(str(src)) if host.startswith(".") else src, mode == ["ro"])
    return out


def mounted(service, path: PurePosixPath, writable=False):
    """The host side of a container `path`, or None when no volume holds it (or holds it read-only)."""
    for target, (src, ro) in mounts(service).items():
        if path == target or target in path.parents:
            if writable and ro:
                return None
            return src / path.relative_to(target) if isinstance(src, PurePosixPath) else src
    return None


def options(args: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}


def test_optuna_and_mlflow_have_a_database_each_on_the_postgres_service(compose):
    env = compose["postgres"]["environment"]
    server = options(compose["mlflow"]["entrypoint"])
    worker = options(compose["worker"]["command"])
    optuna, ml = urlparse(worker["--storage"]), urlparse(server["--backend-store-uri"])
    for url in (optuna, ml):
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert optuna.path == "/" + env["POSTGRES_DB"]
    assert ml.path != optuna.path  # both keep alembic_version: one database each
    init = mounted(compose["postgres"], PurePosixPath("/docker-entrypoint-initdb.d"))
    created = re.findall(r"CREATE DATABASE (\w+)", "".join(p.read_text() for p in sorted(Path(init).glob("*.sql"))))
    assert created == [ml.path.lstrip("/")]


def test_the_mlflow_server_command_parses_and_the_workers_reach_it(compose):
    from mlflow.cli import server

    svc = compose["mlflow"]
    assert svc["entrypoint"][:2] == ["mlflow", "server"]
    ctx = server.make_context("server", list(svc["entrypoint"][2:]))
    assert ctx.params["artifacts_destination"] and mounted(svc, PurePosixPath(ctx.params["artifacts_destination"]),
                                                            writable=True)
    url = urlparse(options(compose["worker"]["command"])["--mlflow"])
    assert url.hostname == "mlflow" and url.port == ctx.params["port"] == int(svc["ports"][0].split(":")[1])


def test_the_worker_command_parses_and_its_paths_are_mounted(compose):
    svc = compose["worker"]
    dockerfile = open(DOCKER / "Dockerfile.worker").read()
    assert 'ENTRYPOINT ["orchestrator"]' in dockerfile
    assert svc["command"][:2] == ["study", "run"]
    ctx = study_run.make_context("run", list(svc["command"][2:]))
    p, cwd = ctx.params, PurePosixPath(svc["working_dir"])
    space_host = mounted(svc, cwd / p["space_file"])
    assert space_host is not None, f"{p['space_file']} is not in a mounted volume"
    space = load_space(str(space_host))
    assert mounted(svc, cwd / space.base), f"the base {space.base} is not in a mounted volume"
    assert mounted(svc, cwd / p["out_dir"], writable=True), f"--out {p['out_dir']} is not in a writable volume"
    assert mounted(svc, PurePosixPath(p["data_dir"])), f"--data-dir {p['data_dir']} is not mounted"
    assert p["storage"].startswith("postgresql://") and p["tracking_uri"].startswith("http://")
    assert int(svc["environment"]["OMP_NUM_THREADS"]) >= 1


def test_a_bad_worker_command_would_fail_this_check():
    """The parse above is a real check: an option the CLI does not have is refused."""
    with pytest.raises(click.NoSuchOption):
        study_run.make_context("run", ["space.yaml", "--outdir", "runs"])
