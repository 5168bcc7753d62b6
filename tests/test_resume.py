"""A study killed mid-trial (kill -9) resumes: the lost trial is retried and its run does not stay RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_study
from test_cli import ABLATE

pytestmark = pytest.mark.slow


def test_kill_9_mid_trial_then_resume(tmp_path: Path, write_study, project) -> None:
    # One trial of several seconds (2,000 images, 3 epochs), killed as soon as it runs.
    raw = tiny_study(name="killed", repeats=1, factors={"model.skip": ["concat"]})
    raw["data"]["train_size"] = 2000
    raw["train"]["epochs"] = 3
    path = write_study(raw)
    command = [ABLATE, "run", str(path), "--home", str(project.home)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed = wait_for_running_trial(project.storage, "killed", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    client = MlflowClient(project.tracking_uri)
    killed_run = killed.user_attrs["mlflow_run_id"]
    assert client.get_run(killed_run).info.status == "RUNNING"  # nobody could end it: the process died

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="killed", storage=project.storage).get_trials()
    states = {t.number: t.state for t in trials}
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    assert "interrupted" in trials[killed.number].user_attrs["ablate.error"]
    assert [t.state for t in trials if t.number != killed.number] == [optuna.trial.TrialState.COMPLETE]
    ended = client.get_run(killed_run)
    assert ended.info.status == "KILLED" and "interrupted" in ended.data.tags["ablate.error"]


def wait_for_running_trial(storage: str, name: str, process: subprocess.Popen, timeout: float = 120) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "ablate run ended before a trial started"
        try:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except (KeyError, Exception):
            trials = []
        if trials and trials[0].user_attrs.get("mlflow_run_id"):
            return trials[0]
        time.sleep(0.5)
    raise TimeoutError("no trial started running")
