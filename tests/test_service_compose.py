"""docker-compose.yml without a Docker engine: it parses, its commands are real, its variables documented.

Every service command is parsed by the CLI it names (ablate's argparse parser, MLflow's click
group) or run for real (optuna-dashboard against a real PostgreSQL database), after compose's
variable substitution with the values of .env.example.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
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
    # Without the secrets, compose refuses to start.
    with pytest.raises(KeyError, match="PASSWORD|SECRET"):
        compose({k: v for k, v in documented.items()})
    ini = (REPO / "deploy/mlflow/basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M)


def test_services_ports_volumes_and_the_gpu_worker() -> None:
    spec = compose(filled_env())
    services = spec["services"]
    assert set(services) == {"postgres", "mlflow", "optuna-dashboard", "worker"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine by default"
    opted_in = compose({**filled_env(), "ABLATE_BIND": "0.0.0.0"})["services"]["mlflow"]["ports"]
    assert opted_in == ["0.0.0.0:5000:5000"]
    assert "healthcheck" in services["postgres"] and "postgres-data" in spec["volumes"]
    assert any(v.startswith("mlflow-data:") for v in services["mlflow"]["volumes"])
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # so --scale worker=N works
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["build"]["context"] == "." and (REPO / "Dockerfile").is_file()
    assert "gpu" in worker["build"]["args"]["EXTRAS"] and "service" in worker["build"]["args"]["EXTRAS"]
    # No password inside any URL: libpq takes PGPASSWORD from the environment.
    for name, service in services.items():
        for value in [*map(str, service.get("command", [])), *map(str, (service.get("environment") or {}).values())]:
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}: a password in {value!r}"


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


def test_optuna_dashboard_command_runs_against_a_real_storage(tmp_path: Path) -> None:
    from test_distributed import database, free_port

    command = compose(filled_env())["services"]["optuna-dashboard"]["command"]
    assert command[0] == "optuna-dashboard" and command[1].startswith("postgresql+psycopg2://")
    port = free_port()
    with database("dashboard") as storage:
        import optuna

        optuna.create_study(study_name="seen-by-the-dashboard", storage=storage)
        # The compose command with its in-network host and port swapped for this machine's.
        args = [storage if a == command[1] else a for a in command[1:]]
        args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
        binary = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
        process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read().decode()
                    break
                except OSError:
                    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                    assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                    time.sleep(0.3)
            assert "seen-by-the-dashboard" in body
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
