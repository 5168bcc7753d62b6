"""A planted secret, in each form a database or HTTP URL carries one, reaches nothing ablate writes.

A real study runs against a real PostgreSQL Optuna storage whose URL carries the secret (trust auth
accepts any password, so the URL works as written); then every place ablate writes is scanned:
the terminal (stdout and stderr of `run`, `status`, `report`), the project folder (the MLflow
store's SQLite file byte for byte, every artifact, the logs), a dump of the Optuna database, and
the report files (HTML, Markdown, JSON), with an `--ui-url` that carries a secret too.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
import yaml

from conftest import tiny_study
from test_cli import ABLATE

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

# Each a different form: userinfo password, a %-escaped one holding @ and :, a query parameter,
# a libpq-style `password=` among others, and a plain `postgresql://` scheme.
FORMS = {
    "userinfo": "postgresql+psycopg2://postgres:{secret}@127.0.0.1:5432/{db}",
    "escaped": "postgresql://postgres:{secret}%40x%3Ay@127.0.0.1:5432/{db}",
    "query": "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}?application_name=ablate&password={secret}",
}


def _database(name: str, *, drop: bool = False) -> None:
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def _files_holding(folder: Path, secret: bytes) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and secret in path.read_bytes()]


@pytest.mark.slow
@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_planted_secret_is_nowhere_ablate_writes(form: str, tmp_path: Path) -> None:
    secret = f"PLANTED{uuid.uuid4().hex[:10]}"
    db = f"ablate_secret_{uuid.uuid4().hex[:8]}"
    storage = FORMS[form].format(secret=secret, db=db)
    _database(db)
    try:
        study = tmp_path / "study.yaml"
        raw = tiny_study(name="planted", repeats=1, factors={"model.skip": ["none"]},
                         data={"dataset": "mnist-embedded", "train_size": 64, "val_size": 32, "test_size": 0},
                         train={"epochs": 1, "batch_size": 32}, tracking={"image_every": 0, "images": 2})
        study.write_text(yaml.safe_dump(raw))
        home = tmp_path / "home"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ABLATE_STORAGE": storage}
        outputs = []
        for args in (
            ["run", str(study), "--home", str(home)],
            ["status", "--home", str(home)],
            ["report", "planted", "--home", str(home), "--out", str(tmp_path / "report"), "--format", "html",
             "--ui-url", f"http://viewer:{secret}@127.0.0.1:5000/?token={secret}"],
            ["report", "planted", "--home", str(home), "--out", str(tmp_path / "report"), "--format", "md", "--no-log"],
            ["report", "planted", "--home", str(home), "--out", str(tmp_path / "report"), "--format", "json", "--no-log"],
        ):
            result = subprocess.run([ABLATE, *args], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
        terminal = "\n".join(outputs)
        assert secret not in terminal
        assert "planted" in terminal and "127.0.0.1:5432" in terminal  # it did say where, masked
        assert _files_holding(home, secret.encode()) == []  # MLflow's store, artifacts, logs, locks
        assert _files_holding(tmp_path / "report", secret.encode()) == []
        written = {p.name for p in (tmp_path / "report").rglob("*") if p.is_file()}
        assert {"index.html", "report.md", "report.json"} <= written, written
        dump = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", db], capture_output=True, text=True, check=True)
        assert "planted" in dump.stdout and secret not in dump.stdout  # the Optuna storage: every table, every attribute
    finally:
        _database(db, drop=True)
