"""The `ablate` command through its installed entry point, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tiny_study

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
HEAVY = ("keras", "tensorflow", "optuna", "mlflow", "pandas", "scipy")


def ablate(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([ABLATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from ablate.cli import build_parser; build_parser();"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_formats_spelled_once_for_help_and_report() -> None:
    from ablate.cli.report import FORMATS as offered
    from ablate.report.make import FORMATS as made

    assert offered == made


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["reproduce"], ["ui"], ["audit"]])
def test_every_help_answers(command: list[str], tmp_path: Path) -> None:
    result = ablate(*command, "--help", cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "usage: ablate" in result.stdout


def test_validate_prints_the_plan(tmp_path: Path, write_study) -> None:
    path = write_study(tiny_study())
    result = ablate("validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trials" in result.stdout and "4" in result.stdout and "model.skip" in result.stdout
    assert not (tmp_path / ".ablate").exists()  # validate creates nothing


def test_bad_file_is_refused_before_anything_is_created(tmp_path: Path, write_study) -> None:
    path = write_study(tiny_study(train={"epochs": 0}))
    result = ablate("run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "train.epochs" in result.stderr and "greater than or equal to 1" in result.stderr
    assert not (tmp_path / ".ablate").exists()


def test_missing_dataset_file_is_a_clear_error(tmp_path: Path, write_study) -> None:
    path = write_study(tiny_study(data={"dataset": "mnist", "path": str(tmp_path / "nope.npz")}))
    for command in ("validate", "run"):  # bad input, refused before anything exists
        result = ablate(command, str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "nope.npz: no such file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".ablate").exists()


@pytest.mark.slow
def test_reproduce_json_and_the_mlflow_ui(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = ablate(
        "reproduce", "skip-vs-noskip", "--profile", "quick", "--json", str(out),
        "--set", "data.train_size=256", "--set", "model.filters=4", "--set", "train.epochs=1",
        "--set", "repeats=2", "--set", "data.val_size=64",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "paired skip - noskip" in result.stdout and "0.1664" in result.stdout
    data = json.loads(out.read_text())
    assert data["study"] == "skip-vs-noskip-quick" and data["profile"] == "quick"
    assert data["dataset"] == "mnist-embedded" and data["epochs"] == 1
    assert data["reference"] == {"noskip": 0.1664, "skip": 0.14, "epochs": 20}
    assert data["storage"].startswith("sqlite:///") and str(tmp_path / ".ablate") in data["storage"]
    for label in ("noskip", "skip"):
        assert data["variants"][label]["n"] == 2 and len(data["variants"][label]["ci95"]) == 2
    per_seed = data["per_seed"]
    diffs = [per_seed["skip"][s] - per_seed["noskip"][s] for s in ("0", "1")]
    assert data["paired_difference"]["mean"] == pytest.approx(sum(diffs) / 2)

    # The same study through the MLflow UI's REST API, from the same project folder.
    port = free_port()
    ui = subprocess.Popen([ABLATE, "ui", "--port", str(port)], cwd=tmp_path, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        experiment = wait_json(f"{base}/experiments/get-by-name?experiment_name=skip-vs-noskip-quick")["experiment"]
        request = urllib.request.Request(
            f"{base}/runs/search", data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.loads(urllib.request.urlopen(request, timeout=10).read())["runs"]
        roles = sorted(t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "ablate.role")
        assert roles == ["study", "trial", "trial", "trial", "trial"]
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_json(url: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
