"""docker-compose.yml without a Docker engine: it parses, its commands are real, its variables documented.

Every service command is parsed by the CLI it names (ablate's argparse parser, MLflow's click
group) or run for real, after compose's variable substitution with the values of .env.example:
the postgres init script against the PostgreSQL at 127.0.0.1:5432 (with throwaway role and database
names, dropped afterwards), Optuna's schema step and optuna-dashboard with the roles it made, and
the `mlflow-users` step against a real `mlflow server --app-name basic-auth` whose backend store
is the mlflow role's database.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
ROLES_SCRIPT = REPO / "deploy/postgres/10-roles.sh"
ONE_SHOTS = {"mlflow-users", "optuna-schema"}
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET = re.compile(r"PASSWORD|SECRET")


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def substitute(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op and op.endswith("?") and not value:
            raise KeyError(f"{name} is required: {arg}")
        if op and op.endswith("-") and not value:
            return arg
        return value

    return VARIABLE.sub(one, text).replace("$$", "$")


def compose(env: dict[str, str]) -> dict[str, Any]:
    """The compose file as compose sees it: parsed first, then every string value interpolated."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return substitute(node, env) if isinstance(node, str) else node

    return walk(yaml.safe_load(COMPOSE.read_text()))


def used_variables() -> dict[str, tuple[str | None, str | None]]:
    """Every variable the compose file's values use, with its operator (`:-`, `:?`) and argument."""
    found: dict[str, tuple[str | None, str | None]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            for match in VARIABLE.finditer(node):
                found[match.group(1)] = (match.group(2), match.group(3))

    walk(yaml.safe_load(COMPOSE.read_text()))
    return found


def filled_env() -> dict[str, str]:
    """.env.example with its empty secrets filled, as a user's .env would be."""
    return {k: (v or f"filled-{k.lower()}") for k, v in env_example().items()}


def test_every_variable_is_documented_and_no_password_has_a_default() -> None:
    documented = env_example()
    used = used_variables()
    assert used, "the compose file uses no variables?"
    assert set(used) <= set(documented), f"undocumented in .env.example: {sorted(set(used) - set(documented))}"
    for name, (op, _) in used.items():
        if SECRET.search(name):
            assert op == ":?", f"{name} must be required (${{{name}:?...}}), never defaulted"
            assert documented[name] == "", f".env.example must not hold a working {name}"
    # One password per account: the superuser's, each service role's, MLflow's admin and worker.
    assert {
        "POSTGRES_PASSWORD", "POSTGRES_OPTUNA_PASSWORD", "POSTGRES_DASHBOARD_PASSWORD", "POSTGRES_MLFLOW_PASSWORD",
        "MLFLOW_ADMIN_PASSWORD", "MLFLOW_WORKER_PASSWORD",
    } <= {name for name in used if SECRET.search(name)}
    # Without the secrets, compose refuses to start.
    with pytest.raises(KeyError, match="PASSWORD|SECRET"):
        compose({k: v for k, v in documented.items()})
    ini = (REPO / "deploy/mlflow/basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.MULTILINE)
    # The workers never default to MLflow's admin account.
    admin = basic_auth_ini()["admin_username"]
    assert used["MLFLOW_WORKER_USERNAME"][1] not in ("", admin) and documented["MLFLOW_WORKER_USERNAME"] != admin


def test_services_ports_volumes_and_the_gpu_worker() -> None:
    spec = compose(filled_env())
    services = spec["services"]
    assert set(services) == {"postgres", "mlflow", "mlflow-users", "optuna-schema", "optuna-dashboard", "worker"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine by default"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(".") or (REPO / source).is_file(), f"{name} mounts a missing {source}"
    opened = compose({**filled_env(), "ABLATE_BIND": "0.0.0.0"})["services"]
    assert opened["mlflow"]["ports"] == ["0.0.0.0:5000:5000"] and opened["postgres"]["ports"] == ["0.0.0.0:5432:5432"]
    # optuna-dashboard has no authentication: loopback whatever the bind (reached through an SSH tunnel).
    assert opened["optuna-dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    assert "healthcheck" in services["postgres"] and "postgres-data" in spec["volumes"]
    assert any(v.startswith("mlflow-data:") for v in services["mlflow"]["volumes"])
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # so --scale worker=N works
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["build"]["context"] == "." and (REPO / "Dockerfile").is_file()
    assert "gpu" in worker["build"]["args"]["EXTRAS"] and "service" in worker["build"]["args"]["EXTRAS"]
    # One-shots run once per `up` and gate what needs them.
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no" and "ports" not in services[name]
    assert worker["depends_on"]["mlflow-users"] == {"condition": "service_completed_successfully"}
    assert services["optuna-dashboard"]["depends_on"]["optuna-schema"] == {"condition": "service_completed_successfully"}
    # No password inside any URL: libpq takes PGPASSWORD from the environment.
    for name, service in services.items():
        for value in [*map(str, service.get("command", [])), *map(str, (service.get("environment") or {}).values())]:
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}: a password in {value!r}"


def database_logins() -> dict[str, tuple[str, str, str]]:
    """Per service that opens a database: (role, database, the .env variable its PGPASSWORD is)."""
    services = compose(filled_env())["services"]
    urls = {
        "worker": services["worker"]["environment"]["ABLATE_STORAGE"],
        "optuna-schema": services["optuna-schema"]["command"][-1],
        "optuna-dashboard": services["optuna-dashboard"]["command"][1],
        "mlflow": services["mlflow"]["command"][services["mlflow"]["command"].index("--backend-store-uri") + 1],
    }
    secrets = {f"filled-{k.lower()}": k for k in env_example() if SECRET.search(k)}
    logins = {}
    for name, url in urls.items():
        match = re.fullmatch(r"postgresql\+psycopg2://([^@:/]+)@postgres:5432/(\w+)", url)
        assert match, f"{name}: {url}"
        logins[name] = (match.group(1), match.group(2), secrets[services[name]["environment"]["PGPASSWORD"]])
    return logins


def test_each_service_logs_in_to_postgres_as_its_own_role() -> None:
    script = ROLES_SCRIPT.read_text()
    defaults = dict(re.findall(r"\$\{ABLATE_(\w+):-(\w+)\}", script))
    optuna = (defaults["OPTUNA_ROLE"], defaults["OPTUNA_DATABASE"], "POSTGRES_OPTUNA_PASSWORD")
    assert database_logins() == {
        "worker": optuna,
        "optuna-schema": optuna,
        "optuna-dashboard": (defaults["DASHBOARD_ROLE"], defaults["OPTUNA_DATABASE"], "POSTGRES_DASHBOARD_PASSWORD"),
        "mlflow": (defaults["MLFLOW_ROLE"], defaults["MLFLOW_DATABASE"], "POSTGRES_MLFLOW_PASSWORD"),
    }
    services = compose(filled_env())["services"]
    # The superuser's password reaches the postgres container alone; the service roles' passwords
    # reach it for the init script.
    holders = [n for n, s in services.items() if "filled-postgres_password" in (s.get("environment") or {}).values()]
    assert holders == ["postgres"]
    assert {"POSTGRES_OPTUNA_PASSWORD", "POSTGRES_DASHBOARD_PASSWORD", "POSTGRES_MLFLOW_PASSWORD"} <= set(
        services["postgres"]["environment"]
    )
    assert any(v.endswith(":/docker-entrypoint-initdb.d/10-roles.sh:ro") for v in services["postgres"]["volumes"])


def test_ablate_commands_parse_with_ablate_parser() -> None:
    from ablate.cli.main import build_parser

    services = compose(filled_env())["services"]
    command = services["worker"]["command"]
    assert command[0] == "ablate"
    args = build_parser().parse_args(command[1:])
    assert args.handler.__name__ == "worker_command" and args.all
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--bogus"])  # the check can fail


def test_mlflow_command_parses_with_mlflow_click_cli() -> None:
    from mlflow.cli import cli

    command = compose(filled_env())["services"]["mlflow"]["command"]
    assert command[0] == "mlflow"
    context = cli.make_context("mlflow", list(command[1:]))
    name, server, rest = cli.resolve_command(context, [*context.protected_args, *context.args])
    params = server.make_context(name, rest, parent=context).params
    assert name == "server" and params["app_name"] == "basic-auth"
    assert params["backend_store_uri"].startswith("postgresql+psycopg2://") and params["port"] == 5000
    assert params["artifacts_destination"] == "/mlflow/artifacts"
    import click

    with pytest.raises(click.UsageError):
        server.make_context(name, ["--no-such-flag"], parent=context)


# --- the PostgreSQL roles, natively -----------------------------------------------------------


@dataclass
class Roles:
    """What deploy/postgres/10-roles.sh made on the local PostgreSQL, under throwaway names."""

    names: dict[str, str]  # ABLATE_OPTUNA_ROLE -> its throwaway value, ...
    passwords: dict[str, str]  # POSTGRES_OPTUNA_PASSWORD -> its value, ...

    def url(self, role: str, database: str) -> str:
        """A storage URL on this machine, for a role and database named as in docker-compose.yml."""
        return f"postgresql+psycopg2://{self.names[role]}@127.0.0.1:5432/{self.names[database]}"


def run_roles_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("psql") is None:
        pytest.fail("these tests need psql (15 or later) on PATH, and PostgreSQL on 127.0.0.1:5432")
    return subprocess.run(["sh", str(ROLES_SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=60)


@contextmanager
def roles_made() -> Iterator[Roles]:
    """Run the script as the image's entrypoint would, twice, with throwaway names; drop all it made after."""
    from test_distributed import _admin

    tag = f"ablate_test_{uuid.uuid4().hex[:8]}"
    names = {
        "ABLATE_OPTUNA_ROLE": f"{tag}_optuna", "ABLATE_DASHBOARD_ROLE": f"{tag}_optuna_dashboard",
        "ABLATE_MLFLOW_ROLE": f"{tag}_mlflow", "ABLATE_OPTUNA_DATABASE": f"{tag}_optuna_db",
        "ABLATE_MLFLOW_DATABASE": f"{tag}_mlflow_db",
    }
    passwords = {k: "test-only-" + uuid.uuid4().hex for k in
                 ("POSTGRES_OPTUNA_PASSWORD", "POSTGRES_DASHBOARD_PASSWORD", "POSTGRES_MLFLOW_PASSWORD")}
    # As the image's entrypoint runs it: POSTGRES_USER is the superuser (here the local one, over TCP).
    env = {**os.environ, **names, **passwords, "POSTGRES_USER": "postgres", "PGHOST": "127.0.0.1", "PGPORT": "5432"}
    env.pop("PGPASSWORD", None)
    try:
        for attempt in (1, 2):  # twice: it is idempotent (and the second run is how passwords are changed)
            result = run_roles_script(env)
            assert result.returncode == 0, f"run {attempt}: {result.stderr}"
        yield Roles(names, passwords)
    finally:
        for key in ("ABLATE_OPTUNA_DATABASE", "ABLATE_MLFLOW_DATABASE"):
            _admin(f'DROP DATABASE IF EXISTS "{names[key]}" WITH (FORCE)')
        for key in ("ABLATE_OPTUNA_ROLE", "ABLATE_DASHBOARD_ROLE", "ABLATE_MLFLOW_ROLE"):
            _admin(f'DROP ROLE IF EXISTS "{names[key]}"')


@pytest.fixture
def roles() -> Iterator[Roles]:
    with roles_made() as made:
        yield made


def connect(role: str, database: str) -> Any:
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=5432, user=role, dbname=database, connect_timeout=5)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's stored SCRAM-SHA-256 verifier was made from this password (RFC 5802)."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, _server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


def test_postgres_init_script_gives_each_service_its_own_database(roles: Roles) -> None:
    import optuna
    import psycopg2
    import psycopg2.errors

    n = roles.names
    optuna_role, dashboard_role, mlflow_role = n["ABLATE_OPTUNA_ROLE"], n["ABLATE_DASHBOARD_ROLE"], n["ABLATE_MLFLOW_ROLE"]
    optuna_db, mlflow_db = n["ABLATE_OPTUNA_DATABASE"], n["ABLATE_MLFLOW_DATABASE"]
    # Each role: a login with the password from the environment, and no other power.
    admin = connect("postgres", "postgres")
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword FROM pg_authid"
                " WHERE rolname = ANY(%s)", ([optuna_role, dashboard_role, mlflow_role],),
            )
            found = {row[0]: row[1:] for row in cursor.fetchall()}
            cursor.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                           ([optuna_db, mlflow_db],))
            owners = dict(cursor.fetchall())
    finally:
        admin.close()
    for role, variable in ((optuna_role, "POSTGRES_OPTUNA_PASSWORD"), (dashboard_role, "POSTGRES_DASHBOARD_PASSWORD"),
                           (mlflow_role, "POSTGRES_MLFLOW_PASSWORD")):
        superuser, createdb, createrole, login, verifier = found[role]
        assert login and not (superuser or createdb or createrole), role
        assert scram_matches(verifier, roles.passwords[variable]), f"{role}'s password is not {variable}"
    assert owners == {optuna_db: optuna_role, mlflow_db: mlflow_role}

    # The optuna role (workers, `ablate submit`) creates Optuna's tables and studies in its database.
    study = optuna.create_study(study_name="made-by-the-optuna-role", storage=roles.url("ABLATE_OPTUNA_ROLE", "ABLATE_OPTUNA_DATABASE"))
    trial = study.ask()
    study.tell(trial, 1.0)
    # No role reaches another service's database.
    for role, database in ((optuna_role, mlflow_db), (dashboard_role, mlflow_db), (mlflow_role, optuna_db)):
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            connect(role, database).close()
    # The dashboard's role reads Optuna's tables (made after the grant) and cannot write them.
    reader = connect(dashboard_role, optuna_db)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT study_name FROM studies")
            assert cursor.fetchall() == [("made-by-the-optuna-role",)]
        for statement in ("DELETE FROM studies", "UPDATE trials SET state = 'FAIL'", "CREATE TABLE extra (x int)"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), reader.cursor() as cursor:
                cursor.execute(statement)
            reader.rollback()
    finally:
        reader.close()


def test_optuna_dashboard_command_runs_read_only_on_the_schema_step(roles: Roles, tmp_path: Path) -> None:
    """The compose order: optuna-schema (optuna role) makes the tables, the dashboard (read-only) serves them."""
    from test_distributed import free_port

    services = compose(filled_env())["services"]
    bin_folder = str(Path(sys.executable).parent)
    owner_env = {**os.environ, "PGPASSWORD": roles.passwords["POSTGRES_OPTUNA_PASSWORD"]}
    schema = services["optuna-schema"]["command"]
    assert schema[:2] == ["optuna", "studies"]
    owner_url = roles.url("ABLATE_OPTUNA_ROLE", "ABLATE_OPTUNA_DATABASE")
    result = subprocess.run([shutil.which("optuna", path=bin_folder), *schema[1:-1], owner_url],
                            check=False, env=owner_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    command = services["optuna-dashboard"]["command"]
    assert command[0] == "optuna-dashboard" and command[1].startswith("postgresql+psycopg2://")
    port = free_port()
    # The compose command with its role, database, host and port swapped for this machine's.
    args = [roles.url("ABLATE_DASHBOARD_ROLE", "ABLATE_OPTUNA_DATABASE") if a == command[1] else a for a in command[1:]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    process = subprocess.Popen([shutil.which("optuna-dashboard", path=bin_folder), *args],
                               env={**os.environ, "PGPASSWORD": roles.passwords["POSTGRES_DASHBOARD_PASSWORD"]},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/studies"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                body = json.loads(urllib.request.urlopen(base, timeout=2).read())
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
        assert body["study_summaries"] == []  # up before the first study, on the tables optuna-schema made
        import optuna

        optuna.create_study(study_name="seen-by-the-dashboard", storage=owner_url)
        [summary] = json.loads(urllib.request.urlopen(base, timeout=10).read())["study_summaries"]
        assert summary["study_name"] == "seen-by-the-dashboard"
        # Whoever reaches the unauthenticated dashboard cannot delete a study: its role only reads.
        request = urllib.request.Request(f"{base}/{summary['study_id']}", method="DELETE")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
        assert optuna.get_all_study_names(owner_url) == ["seen-by-the-dashboard"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


# --- the workers' MLflow user, natively -------------------------------------------------------


def basic_auth_ini() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(REPO / "deploy/mlflow/basic_auth.ini")
    return dict(config["mlflow"])


@pytest.fixture(scope="module")
def mlflow_on_its_role(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`mlflow server --app-name basic-auth` on the mlflow role's database, as compose runs it."""
    from test_distributed import MlflowServer

    with roles_made() as roles:
        server = MlflowServer(roles.url("ABLATE_MLFLOW_ROLE", "ABLATE_MLFLOW_DATABASE"), tmp_path_factory.mktemp("mlflow"))
        # The server's auth settings are the stack's (bar the user store's path).
        config = configparser.ConfigParser()
        config.read(server.env["MLFLOW_AUTH_CONFIG_PATH"])
        for key in ("default_permission", "admin_username", "authorization_function"):
            assert config["mlflow"][key] == basic_auth_ini()[key]
        server.env["PGPASSWORD"] = roles.passwords["POSTGRES_MLFLOW_PASSWORD"]
        server.start()  # MLflow's migrations run as the mlflow role, in its own database
        try:
            yield server
        finally:
            server.stop()


def run_mlflow_users(server: Any, **changes: str) -> subprocess.CompletedProcess[str]:
    """The `mlflow-users` service's command and environment, its mounts and URL mapped to this machine."""
    service = compose(filled_env())["services"]["mlflow-users"]
    mounts = {target: REPO / source for source, target, *_ in (v.split(":") for v in service["volumes"])}
    command = service["command"]
    assert command[0] == "python"
    env = {
        **os.environ, **service["environment"],
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_AUTH_CONFIG_PATH": server.env["MLFLOW_AUTH_CONFIG_PATH"],
        "MLFLOW_ADMIN_PASSWORD": server.env["MLFLOW_AUTH_ADMIN_PASSWORD"],
        **changes,
    }
    return subprocess.run([sys.executable, *(str(mounts.get(a, a)) for a in command[1:])],
                          check=False, env=env, capture_output=True, text=True, timeout=120)


def rest(server: Any, method: str, path: str, body: dict[str, Any], user: str, password: str) -> tuple[int, dict[str, Any]]:
    """One REST call as `user`; (HTTP status, JSON body)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{server.url}/api/{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def test_mlflow_users_makes_a_least_privilege_worker_idempotently(
    mlflow_on_its_role: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    server = mlflow_on_its_role
    admin = ("admin", server.env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    worker = compose(filled_env())["services"]["worker"]["environment"]["MLFLOW_TRACKING_USERNAME"]
    assert worker == compose(filled_env())["services"]["mlflow-users"]["environment"]["MLFLOW_WORKER_USERNAME"]
    password = "test-only-" + uuid.uuid4().hex
    first = run_mlflow_users(server, MLFLOW_WORKER_PASSWORD=password)
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    # A second `docker compose up`: nothing fails, nothing is created twice, the account stays as it was.
    second = run_mlflow_users(server, MLFLOW_WORKER_PASSWORD=password)
    assert second.returncode == 0 and "created" not in second.stdout and "granted" not in second.stdout, second.stderr
    assert password not in first.stdout + first.stderr + second.stdout + second.stderr
    # Refused outright: the workers as the admin account.
    refused = run_mlflow_users(server, MLFLOW_WORKER_USERNAME="admin", MLFLOW_WORKER_PASSWORD=password)
    assert refused.returncode != 0 and "must not be the admin" in refused.stderr

    # What `ablate submit` does, as the admin: the study's experiment and its parent run.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.create_experiment(f"study-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment).info.run_id

    # What a worker does, as the worker: find the experiment, a nested run, metrics, an artifact, the end.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", worker)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert client.get_experiment(experiment).experiment_id == experiment
    run = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_metric(run, "val_loss", 0.25, step=1)
    client.log_param(run, "model.skip", "concat")
    (tmp_path / "model_summary.txt").write_text("summary")
    client.log_artifact(run, str(tmp_path / "model_summary.txt"))  # through the server's artifact proxy
    client.set_terminated(run)
    client.set_tag(parent, "ablate.state", "finished")
    client.set_terminated(parent)
    # ... and no more than that.
    for action in (lambda: client.delete_run(run), lambda: client.delete_experiment(experiment)):
        with pytest.raises(MlflowException, match="Permission denied|PERMISSION_DENIED"):
            action()
    as_worker = (worker, password)
    assert rest(server, "POST", "2.0/mlflow/users/create", {"username": "intruder", "password": "x" * 20}, *as_worker)[0] == 403
    assert rest(server, "PATCH", "2.0/mlflow/users/update-admin", {"username": worker, "is_admin": True}, *as_worker)[0] == 403
    grant = {"username": worker, "resource_type": "experiment", "resource_id": experiment, "permission": "MANAGE"}
    assert rest(server, "POST", "3.0/mlflow/users/permissions/grant", grant, *as_worker)[0] == 403
    assert rest(server, "GET", "2.0/mlflow/users/get?username=admin", {}, *as_worker)[0] == 403

    # Whatever was changed by hand, the next start puts the account back: .env's password, no admin flag.
    assert rest(server, "PATCH", "2.0/mlflow/users/update-admin", {"username": worker, "is_admin": True}, *admin)[0] == 200
    rotated = "test-only-" + uuid.uuid4().hex
    third = run_mlflow_users(server, MLFLOW_WORKER_PASSWORD=rotated)
    assert third.returncode == 0 and "admin flag removed" in third.stdout, third.stderr
    assert rest(server, "POST", "2.0/mlflow/users/create", {"username": "intruder", "password": "x" * 20}, worker, rotated)[0] == 403
    assert rest(server, "GET", f"2.0/mlflow/experiments/get?experiment_id={experiment}", {}, worker, password)[0] == 401
    status, body = rest(server, "GET", f"2.0/mlflow/runs/get?run_id={run}", {}, *admin)
    assert status == 200 and body["run"]["data"]["metrics"][0]["value"] == 0.25
