"""The first connection to a storage fails in seconds with one line naming it; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ablate.runtime.storage import StorageUnavailableError, open_storage
from conftest import tiny_study
from test_cli import ABLATE

UNREACHABLE = [
    "postgresql+psycopg2://postgres:s3cr3t@127.0.0.1:1/optuna",  # nothing listens there
    "postgresql+psycopg2://postgres@127.0.0.1:5432/ablate_no_such_database",  # the server is up, the db is not
    "postgresql+nosuchdriver://postgres@127.0.0.1:5432/optuna",  # no such driver
    "mysql+pymysql://u:s3cr3t@127.0.0.1:1/optuna",  # a driver that is not installed
]


@pytest.mark.parametrize("url", UNREACHABLE)
def test_a_storage_that_cannot_be_reached_is_one_line_at_once(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CONNECT_SECONDS", "3")
    with pytest.raises(StorageUnavailableError) as caught:
        open_storage(url, heartbeat=None, grace=None)
    message = str(caught.value)
    assert "\n" not in message and "s3cr3t" not in message
    assert url.split("@")[-1].split("/")[0] in message  # names the host it tried


@pytest.mark.parametrize(
    ("url", "code", "said", "budget"),
    [
        (UNREACHABLE[0], 1, "cannot reach the Optuna storage", "3"),  # nothing listens: waited for, then one line
        (UNREACHABLE[1], 2, "cannot open the Optuna storage", "60"),  # no such database: refused at once, no waiting
        ("postgresql+psycopg2://ablate_no_such_role@127.0.0.1:5432/postgres", 2, "cannot open the Optuna storage", "60"),
    ],
)
def test_ablate_run_against_an_unreachable_storage_creates_nothing(
    url: str, code: int, said: str, budget: str, tmp_path: Path
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_study(name="unreachable")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ABLATE_CONNECT_SECONDS": budget}
    started = time.monotonic()
    result = subprocess.run(
        [ABLATE, "run", str(path), "--storage", url, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--home", str(tmp_path / "home")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == code, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert time.monotonic() - started < (120 if code == 1 else 40)  # not the 600 s reconnect budget; no retries at all
    assert "retrying" not in result.stderr or code == 1
    assert not (tmp_path / "m.db").exists()  # no MLflow experiment or run was made
    assert not (tmp_path / "home").exists()  # no project folder, no lock folder


@pytest.mark.parametrize("value", ["soon", "-1", "0", "inf", "nan"])
def test_a_bad_connect_budget_is_refused_by_name(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.errors import AblateError

    monkeypatch.setenv("ABLATE_CONNECT_SECONDS", value)
    with pytest.raises(AblateError, match=r"\$ABLATE_CONNECT_SECONDS must be"):
        open_storage("sqlite:///:memory:", heartbeat=None, grace=None)


def _silent_port() -> tuple[object, int]:
    """A listening socket that never answers (accepts into its backlog, reads nothing): a hung server."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()[1]


UNREACHABLE_TRACKING = [
    "http://127.0.0.1:1",  # refused
    "http://mlflow-user:s3cr3t@127.0.0.1:1/?token=s3cr3t",  # refused, with credentials in two places
    "https://s3cr3t@no-such-host.invalid:5000",  # a name that does not resolve
    "postgresql://mlflow:s3cr3t@127.0.0.1:1/mlflow",  # a database store: nothing listens
    "postgresql+psycopg2://postgres@127.0.0.1:5432/ablate_no_such_database",  # the server is up, the db is not
    "silent",  # a server that accepts and never answers
]


@pytest.mark.parametrize("uri", UNREACHABLE_TRACKING)
def test_a_tracking_store_that_cannot_be_reached_fails_in_seconds_with_nothing_made(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ablate.cli.main import main

    server = None
    if uri == "silent":
        server, port = _silent_port()
        uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("ABLATE_CONNECT_SECONDS", "2")
    monkeypatch.delenv("http_proxy", raising=False)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_study(name="no-tracking")))
    storage = tmp_path / "optuna.db"
    started = time.monotonic()
    for command in ("run", "submit"):
        code = main([command, str(path), "--home", str(tmp_path / "home"), "--tracking-uri", uri,
                     "--storage", f"sqlite:///{storage}"])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "cannot reach the MLflow tracking store" in err and "Traceback" not in err, err
        assert "s3cr3t" not in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 40  # seconds, not MLflow's minutes of retries
    assert not (tmp_path / "home").exists()  # no project folder, no lock folder
    if storage.exists():  # submit opened the storage first; no study was created in it
        import optuna

        assert optuna.get_all_study_names(f"sqlite:///{storage}") == []
    if server is not None:
        server.close()  # type: ignore[attr-defined]


def _open_at_once(url: str, barrier: Any, results: Any, index: int, raw: bool) -> None:
    from optuna.storages import RDBStorage

    barrier.wait()
    try:
        if raw:
            RDBStorage(url)  # Optuna's own open, for comparison
        else:
            open_storage(url, heartbeat=None, grace=None)
        results[index] = "ok"
    except Exception as error:  # noqa: BLE001 - the test reports what each process met
        results[index] = f"{type(error).__name__}: {error}"[:200]


def open_concurrently(url: str, processes: int, *, raw: bool) -> list[str]:
    import multiprocessing

    context = multiprocessing.get_context("fork")  # all wait at one barrier, then open the same new file
    barrier = context.Barrier(processes)
    results = context.Manager().list([""] * processes)
    workers = [context.Process(target=_open_at_once, args=(url, barrier, results, i, raw)) for i in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return list(results)


def test_processes_opening_one_new_storage_together_all_succeed(tmp_path: Path) -> None:
    """Two `ablate run`s on a fresh project (or a poller and a run) create the same new database at once."""
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'new-{attempt}.db'}"
        results = open_concurrently(url, 6, raw=False)
        assert results == ["ok"] * 6, results


def _track_at_once(url: str, barrier: Any, results: Any, index: int) -> None:
    from ablate.tracking.tracker import Tracker

    barrier.wait()
    try:
        Tracker(url).experiment_id(f"study-{index}")
        results[index] = "ok"
    except Exception as error:  # noqa: BLE001 - the test reports what each process met
        results[index] = f"{type(error).__name__}: {error}"[:200]


def test_processes_opening_one_new_tracking_store_together_all_succeed(tmp_path: Path) -> None:
    """MLflow's SQLite store has the same race (and can be left half-migrated): its first use is locked."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(2):
        url = f"sqlite:///{tmp_path / f'mlflow-{attempt}.db'}"
        barrier = context.Barrier(4)
        results = context.Manager().list([""] * 4)
        workers = [context.Process(target=_track_at_once, args=(url, barrier, results, i)) for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=180)
        assert list(results) == ["ok"] * 4, list(results)
