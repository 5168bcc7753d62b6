"""The first connection to a storage fails in seconds with one line naming it; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

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


def test_ablate_run_against_an_unreachable_storage_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_study(name="unreachable")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ABLATE_CONNECT_SECONDS": "3"}
    started = time.monotonic()
    result = subprocess.run(
        [ABLATE, "run", str(path), "--storage", UNREACHABLE[0], "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--home", str(tmp_path / "home")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot reach the Optuna storage" in result.stderr and "Traceback" not in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert time.monotonic() - started < 120  # not the 600 s reconnect budget
    assert not (tmp_path / "m.db").exists()  # no MLflow experiment or run was made


@pytest.mark.parametrize("value", ["soon", "-1", "0", "inf", "nan"])
def test_a_bad_connect_budget_is_refused_by_name(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.errors import AblateError

    monkeypatch.setenv("ABLATE_CONNECT_SECONDS", value)
    with pytest.raises(AblateError, match=r"\$ABLATE_CONNECT_SECONDS must be"):
        open_storage("sqlite:///:memory:", heartbeat=None, grace=None)
