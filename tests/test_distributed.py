"""The shared service natively: real PostgreSQL, a real `mlflow server` with basic auth, real workers.

Each test creates its own uniquely named databases on the PostgreSQL at 127.0.0.1:5432 and drops
them, and ends every process it started. Workers are `ablate worker` subprocesses, as users run
them; results are read back with Optuna's and MLflow's own clients.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ablate.redaction import redact
from conftest import tiny_study

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
MLFLOW = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
PG = dict(host="127.0.0.1", port=5432, user="postgres")
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"
ADMIN_PASSWORD = "test-only-" + uuid.uuid4().hex  # made per run; nothing to leak


# --- PostgreSQL -------------------------------------------------------------------------------


def _admin(sql: str) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:
        pytest.fail(f"these tests need PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres: {error}")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@contextmanager
def database(label: str) -> Iterator[str]:
    """A new, uniquely named database, dropped (with its connections) afterwards."""
    name = f"ablate_test_{label}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = f"{PG_URL}/{name}"
    try:
        yield url
    finally:
        storage = _STORAGES.pop(url, None)
        if storage is not None:
            storage.engine.dispose()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_backends(url: str) -> int:
    """Drop every connection to a database, as a PostgreSQL restart does; return how many."""
    import psycopg2

    name = url.rsplit("/", 1)[1]
    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


# --- the MLflow server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server --app-name basic-auth` on a loopback port, with a PostgreSQL backend store."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend, self.folder = backend, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        auth = folder / "basic_auth.ini"
        auth.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        self.env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as docker-compose.yml: no job-runner processes
        }

    def start(self) -> None:
        command = [
            MLFLOW, "server", "--app-name", "basic-auth",
            "--backend-store-uri", self.backend,
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]
        log = open(self.folder / "server.log", "ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
        }

    def api(self, path: str, body: dict[str, Any] | None = None, *, auth: bool = True) -> dict[str, Any]:
        """The server's REST API, as `curl -u admin:...` would call it."""
        import base64

        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", data=data, headers=headers)
        return json.loads(urllib.request.urlopen(request, timeout=30).read())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    folder = tmp_path_factory.mktemp("mlflow")
    with database("mlflow") as backend:
        server = MlflowServer(backend, folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()


# --- workers ----------------------------------------------------------------------------------


class Workers:
    """`ablate worker` / `ablate submit` subprocesses against one storage and the server."""

    def __init__(self, storage: str, server: MlflowServer, folder: Path) -> None:
        self.storage, self.server, self.folder = storage, server, folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            **server.client_env(),
            "ABLATE_STORAGE": storage,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            # MLflow's own HTTP retries back off for minutes; keep them short so that riding out
            # a server restart is the work of ablate's retries, which these tests are about.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "ABLATE_RECONNECT_SECONDS": "180",
            "ABLATE_TRACKING_RETRY_SECONDS": "180",
        }

    def ablate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ABLATE, *args], cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=300)

    def submit(self, raw: dict[str, Any]) -> None:
        path = self.folder / f"{raw['name']}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        result = self.ablate("submit", str(path))
        assert result.returncode == 0, result.stderr
        # The storage URL has a user and no password: shown as it is, with no invented `:***`.
        assert "postgres@127.0.0.1" in result.stderr and ":***@" not in result.stderr

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"worker-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(
            [ABLATE, "worker", *args], cwd=self.folder, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        self.processes.append(process)
        return process

    def wait(self, timeout: float = 240) -> list[int | None]:
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a worker did not finish in {timeout}s:\n{self.logs()[-4000:]}")
        return [p.returncode for p in self.processes]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def workers(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[Workers]:
    with database("optuna") as storage:
        group = Workers(storage, mlflow_server, tmp_path)
        try:
            yield group
        finally:
            group.stop_all()


# One storage (one connection pool) per database for the test's own reads: polling with a new
# RDBStorage each time left one pooled connection per poll open until garbage collection, and on a
# slow machine that reached PostgreSQL's max_connections mid-test.
_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def load(storage: str, name: str) -> optuna.Study:
    if storage not in _STORAGES:
        _STORAGES[storage] = optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
    return optuna.load_study(study_name=name, storage=_STORAGES[storage])


def pairs(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[str, int]]:
    return sorted((t.user_attrs["ablate.cell"], t.user_attrs["ablate.seed"]) for t in trials)


def wait_for(condition: Any, *, timeout: float, what: str, logs: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs()[-4000:]}")
        time.sleep(0.2)


def trial_runs(server: MlflowServer, experiment: str) -> list[dict[str, Any]]:
    experiment_id = server.api(f"experiments/get-by-name?experiment_name={experiment}")["experiment"]["experiment_id"]
    runs = server.api(
        "runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.`ablate.role` = 'trial'", "max_results": 1000},
    ).get("runs", [])
    return runs


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metric_steps(server: MlflowServer, run_id: str, metric: str) -> list[int]:
    history = server.api(f"metrics/get-history?run_id={run_id}&metric_key={metric}")["metrics"]
    return sorted(m["step"] for m in history)


def artifacts(server: MlflowServer, run_id: str, path: str = "") -> set[str]:
    found = server.api(f"artifacts/list?run_id={run_id}&path={path}").get("files", [])
    return {f["path"] for f in found}


# --- tests ------------------------------------------------------------------------------------


def _pop_all(storage: str, name: str, queue: Any) -> None:
    from ablate.runtime.storage import open_storage
    from ablate.runtime.work import StudyWork
    from ablate.runtime.worker_loop import pop_trial

    rdb = open_storage(storage, heartbeat=5, grace=30)
    study = optuna.load_study(study_name=name, storage=rdb)
    work = StudyWork(study, rdb, None, None, "", "")  # type: ignore[arg-type]  # pop needs the storage only
    popped = []
    while (trial := pop_trial(work)) is not None:
        popped.append(trial.number)
    queue.put(popped)


@contextmanager
def sqlite_file(label: str) -> Iterator[str]:
    """A new SQLite storage file, as local workers share (`ablate run --workers N`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"ablate-{label}-") as folder:
        yield f"sqlite:///{folder}/optuna.db"


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_concurrent_pops_take_each_enqueued_trial_once_and_create_none(backend: str) -> None:
    # 200 trials: before the storage began SQLite transactions with BEGIN IMMEDIATE, 4 processes
    # popped ~20 of 200 twice on SQLite (its driver read the state outside the transaction).
    count = 200
    with (database("pop") if backend == "postgresql" else sqlite_file("pop")) as storage:
        from ablate.runtime.storage import open_storage

        study = optuna.create_study(study_name="pop", storage=open_storage(storage, heartbeat=5, grace=30))
        for i in range(count):
            study.enqueue_trial({"x": i}, user_attrs={"ablate.cell": f"x={i}", "ablate.seed": 0})
        queue: Any = multiprocessing.get_context("spawn").Queue()
        procs = [multiprocessing.get_context("spawn").Process(target=_pop_all, args=(storage, "pop", queue)) for _ in range(4)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        taken = [n for popped in results for n in popped]
        assert sorted(taken) == list(range(count))  # every trial once, none twice
        assert sum(1 for popped in results if popped) >= 2  # they really raced
        trials = load(storage, "pop").trials
        assert len(trials) == count  # popping past the last waiting trial created nothing
        assert {t.state for t in trials} == {TrialState.RUNNING}


def test_a_second_trial_of_the_same_pair_is_skipped_not_run() -> None:
    from rich.console import Console

    from ablate.runtime.progress import StudyProgress
    from ablate.spec.loading import spec_from_dict
    from ablate.runtime.storage import open_storage
    from ablate.runtime.work import StudyWork
    from ablate.runtime.worker_loop import pop_trial
    from ablate.runtime.trial import run_trial

    spec = spec_from_dict(tiny_study(name="twice", repeats=1, factors={"model.skip": ["none"]})).spec
    with database("twice") as storage:
        rdb = open_storage(storage, heartbeat=5, grace=30)
        study = optuna.create_study(study_name="twice", storage=rdb)
        for _ in range(2):  # as a `submit` racing a retry could
            study.enqueue_trial({"model.skip": "none"}, user_attrs={"ablate.cell": "model.skip=none", "ablate.seed": 0})
        work = StudyWork(study, rdb, spec, None, "", "")  # type: ignore[arg-type]  # skipped before any tracking
        first, second = pop_trial(work), pop_trial(work)
        assert (first.number, second.number) == (0, 1)
        run_trial(work, second, progress=StudyProgress(Console(quiet=True)), requeue_on_interrupt=False)
        told = load(storage, "twice").trials
        assert [t.state for t in told] == [TrialState.RUNNING, TrialState.FAIL]
        assert "skipped: trial 0 (RUNNING) holds model.skip=none seed=0" in told[1].user_attrs["ablate.error"]
        assert "mlflow_run_id" not in told[1].user_attrs  # nothing ran, nothing logged


@pytest.mark.slow
def test_two_workers_add_seeds_in_rounds_each_round_once(workers: Workers) -> None:
    # Seeds until decided on the shared service: whichever worker ends a round enqueues the next,
    # under the study's advisory lock; the other waits for it and works on it too.
    raw = tiny_study(name="rounds", factors={"model.filters": [16, 2]}, repeats={"min": 3, "max": 4, "until": "decided"},
                     data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 64, "test_size": 0},
                     train={"epochs": 2, "batch_size": 64}, tracking={"image_every": 0, "images": 4, "save_model": False})
    workers.submit(raw)
    for _ in range(2):
        workers.start("--study", "rounds")
    assert workers.wait() == [0, 0], workers.logs()
    trials = load(workers.storage, "rounds").trials
    assert not [t.number for t in trials if str(t.user_attrs.get("ablate.error", "")).startswith("skipped")]  # once each
    assert len(pairs(trials)) == len(set(pairs(trials))) and all(t.state == TrialState.COMPLETE for t in trials)
    seeds = {seed for _, seed in pairs(trials)}
    assert seeds == set(range(len(seeds))) and 3 <= len(seeds) <= 4 and len(trials) == 2 * len(seeds)
    assert "comparison(s) decided" in workers.logs()
    status = json.loads(workers.ablate("status", "--json").stdout)
    [study] = status["studies"]
    assert (study["complete"], study["total"], study["waiting"], study["running"]) == (len(trials), len(trials), 0, 0)


def test_three_workers_run_an_8_trial_grid_exactly_once(workers: Workers, mlflow_server: MlflowServer) -> None:
    raw = tiny_study(
        name="grid8", factors={"model.skip": ["none", "concat"], "model.filters": [4, 8]}, train={"epochs": 2, "batch_size": 64}
    )
    workers.submit(raw)
    for _ in range(3):
        workers.start("--study", "grid8")
    assert workers.wait() == [0, 0, 0], workers.logs()

    trials = load(workers.storage, "grid8").trials
    expected = sorted((f"model.filters={f},model.skip={s}", seed) for f in (4, 8) for s in ("none", "concat") for seed in (0, 1))
    # Optuna's default median pruner may stop a trial after epoch 1: pruned is finished too.
    assert len(trials) == 8 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert pairs(trials) == expected  # every cell x seed once: none twice, none missing
    assert len({t.user_attrs["ablate.worker"] for t in trials}) >= 2

    status = json.loads(workers.ablate("status", "--json").stdout)
    [study] = status["studies"]
    done = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    assert (study["complete"], study["pruned"], study["total"], study["failed"]) == (done, 8 - done, 8, 0)
    assert (study["waiting"], study["running"]) == (0, 0)
    assert study["best_value"] == pytest.approx(min(t.value for t in trials if t.value is not None))
    assert len(status["workers"]) == 3 or len(status["workers"]) == len({t.user_attrs["ablate.worker"] for t in trials})

    runs = trial_runs(mlflow_server, "grid8")
    assert len(runs) == 8
    by_id = {r["info"]["run_id"]: r for r in runs}
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        assert tags(run)["ablate.trial"] == str(trial.number)
        epochs = [1, 2] if trial.state == TrialState.COMPLETE else [1]
        for metric in ("train_loss", "val_loss", "val_psnr"):
            assert metric_steps(mlflow_server, run_id, metric) == epochs
        pictures = {"reconstructions/epoch_001.png"} | ({"reconstructions/final.png"} if epochs == [1, 2] else set())
        assert artifacts(mlflow_server, run_id, "reconstructions") == pictures
        assert "model_summary.txt" in artifacts(mlflow_server, run_id)
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["seed"] == str(trial.user_attrs["ablate.seed"])
        assert not any("postgres" in v for v in params.values())  # no connection string in params
    parent = tags(mlflow_server.api(f"runs/get?run_id={load(workers.storage, 'grid8').user_attrs['mlflow_parent_run_id']}")["run"])
    assert parent["ablate.storage"] == redact(workers.storage) == workers.storage  # no password in it to hide
    # The server refuses anyone without the password.
    with pytest.raises(urllib.error.HTTPError) as refused:
        mlflow_server.api("experiments/search", {"max_results": 1}, auth=False)
    assert refused.value.code == 401


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_and_its_run_ends_killed(workers: Workers, mlflow_server: MlflowServer) -> None:
    raw = tiny_study(name="killed", data={"dataset": "mnist-embedded", "train_size": 512, "val_size": 64, "test_size": 32},
                     train={"epochs": 5, "batch_size": 64})
    workers.submit(raw)
    beat = ("--heartbeat", "1", "--grace", "4")
    first, second = workers.start("--study", "killed", *beat), workers.start("--study", "killed", *beat)

    def mid_trial() -> Any:
        for t in load(workers.storage, "killed").get_trials(states=(TrialState.RUNNING,)):
            if t.intermediate_values and t.user_attrs.get("mlflow_run_id"):
                return t
        return None

    victim = wait_for(mid_trial, timeout=180, what="a trial past its first epoch", logs=workers.logs)
    pid = int(victim.user_attrs["ablate.worker"].rsplit(":", 1)[1])
    assert pid in (first.pid, second.pid)
    os.kill(pid, signal.SIGKILL)
    killed_run = victim.user_attrs["mlflow_run_id"]
    # A restarted worker joins, as a supervisor (or docker compose) would start one.
    workers.start("--study", "killed", *beat)
    codes = workers.wait()
    assert sorted(code for code in codes) == sorted([-signal.SIGKILL, 0, 0]), workers.logs()

    trials = load(workers.storage, "killed").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pairs(complete) == [("model.skip=concat", 0), ("model.skip=concat", 1), ("model.skip=none", 0), ("model.skip=none", 1)]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert load(workers.storage, "killed").trials[victim.number].state == TrialState.FAIL
    [retried] = [t for t in complete if t.user_attrs.get("ablate.retry_of_trial") == victim.number]
    assert retried.user_attrs["ablate.retry_of_run"] == killed_run
    assert "stale" in retried.user_attrs["ablate.retry_reason"]

    dead = mlflow_server.api(f"runs/get?run_id={killed_run}")["run"]
    assert dead["info"]["status"] == "KILLED"
    assert "no heartbeat" in tags(dead)["ablate.error"]
    assert tags(dead)["ablate.retried_in_run"] == retried.user_attrs["mlflow_run_id"]
    retry_run = mlflow_server.api(f"runs/get?run_id={retried.user_attrs['mlflow_run_id']}")["run"]
    assert retry_run["info"]["status"] == "FINISHED" and tags(retry_run)["ablate.retry_of_run"] == killed_run
    statuses = [r["info"]["status"] for r in trial_runs(mlflow_server, "killed")]
    assert "RUNNING" not in statuses and statuses.count("FINISHED") == 4


@pytest.mark.slow
def test_postgres_connections_dropped_and_mlflow_restarted_mid_study(workers: Workers, mlflow_server: MlflowServer) -> None:
    epochs = 4
    raw = tiny_study(name="faults", data={"dataset": "mnist-embedded", "train_size": 512, "val_size": 64, "test_size": 32},
                     train={"epochs": epochs, "batch_size": 64})
    workers.submit(raw)
    for _ in range(2):
        workers.start("--study", "faults", "--heartbeat", "2", "--grace", "30")

    def running_epochs() -> bool:
        return any(t.intermediate_values for t in load(workers.storage, "faults").get_trials(states=(TrialState.RUNNING,)))

    wait_for(running_epochs, timeout=180, what="a trial mid-way", logs=workers.logs)
    assert terminate_backends(workers.storage) >= 2  # every worker's connections, gone at once
    mlflow_server.stop()
    assert terminate_backends(mlflow_server.backend) >= 0
    time.sleep(3)  # the workers keep training and hit the dead server
    mlflow_server.start()
    assert terminate_backends(workers.storage) >= 1  # and once more, after the server is back
    assert workers.wait() == [0, 0], workers.logs()

    logs = workers.logs()
    assert "MLflow unreachable" in logs  # the restart really hit a worker's logging, which retried
    trials = load(workers.storage, "faults").trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), logs
    runs = {r["info"]["run_id"]: r for r in trial_runs(mlflow_server, "faults")}
    assert len(runs) == 4
    for trial in trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        assert runs[run_id]["info"]["status"] == "FINISHED"
        for metric in ("train_loss", "val_loss", "val_mse", "val_psnr"):
            assert metric_steps(mlflow_server, run_id, metric) == list(range(1, epochs + 1)), (trial.number, metric)
        history = mlflow_server.api(f"metrics/get-history?run_id={run_id}&metric_key=val_loss")["metrics"]
        assert trial.value == pytest.approx(max(history, key=lambda m: m["step"])["value"])
        pictures = artifacts(mlflow_server, run_id, "reconstructions")
        assert pictures == {f"reconstructions/epoch_{e:03d}.png" for e in range(1, epochs)} | {"reconstructions/final.png"}
