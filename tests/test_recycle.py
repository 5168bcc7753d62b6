"""Worker recycling: trials run in child worker processes that a light parent replaces every N trials.

Everything through the installed `ablate` command, as users run it: real local Optuna storage,
real MLflow store, real Keras training in the children; signals sent to the parent the way a
terminal (Ctrl-C) or `kill -9` would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import tiny_study
from test_cli import ABLATE

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def tiny(name: str, **changes) -> dict:
    raw = tiny_study(name=name, **changes)
    raw["data"] = {"dataset": "mnist-embedded", "train_size": 64, "val_size": 32, "test_size": 32}
    raw["model"] = {"filters": 2, "depth": 2}
    raw["train"] = {"epochs": 1, "batch_size": 64}
    return raw


def trials_of(project, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=project.storage).get_trials()


def test_run_replaces_its_worker_process_every_n_trials(write_study, project) -> None:
    path = write_study(tiny("recycled"))  # 2 cells x 2 seeds
    result = subprocess.run(
        [ABLATE, "run", str(path), "--home", str(project.home), "--recycle-after", "2"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "4/4 complete" in result.stderr
    assert result.stderr.count("starting a fresh one") == 1  # two children of two trials each
    assert "epoch 1: train_loss=" in result.stderr  # the children's progress reaches the terminal
    trials = trials_of(project, "recycled")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    per_process = Counter(t.user_attrs["ablate.worker"] for t in trials)
    assert sorted(per_process.values()) == [2, 2]
    client = MlflowClient(project.tracking_uri)
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.metrics["val_loss"] == pytest.approx(trial.value)
    parent = client.get_run(trials[0].user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).info.status == "FINISHED"


def test_each_batch_runs_in_a_fork_of_one_warm_process_that_imported_once(write_study, project) -> None:
    # A fork takes no new trial once it has run $ABLATE_FORK_SECONDS: here at once, so each of the
    # 4 trials gets a fresh fork although --recycle-after allows 10 per process.
    path = write_study(tiny("forked"))
    result = subprocess.run(
        [ABLATE, "run", str(path), "--home", str(project.home), "--recycle-after", "10"],
        env={**ENV, "ABLATE_FORK_SECONDS": "0.001"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "4/4 complete" in result.stderr
    forked = re.findall(r"worker process (\d+) ran its 1 trial\(s\); starting a fresh one \(forked from (\d+)\)", result.stderr)
    assert len(forked) == 3, result.stderr  # the 4th fork finds no more work
    assert len({warm for _, warm in forked}) == 1  # one warm process: Keras imported once
    trials = trials_of(project, "forked")
    pids = [int(t.user_attrs["ablate.worker"].rsplit(":", 1)[1]) for t in trials]
    assert len(set(pids)) == 4 and {int(p) for p, _ in forked} < set(pids)  # a fresh process per trial
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_worker_recycles_under_one_id_and_keeps_its_trial_limit(write_study, project, tmp_path: Path) -> None:
    path = write_study(tiny("limited"))
    # The fallback where fork is not used (ABLATE_FORK=0, as on macOS or Windows): a freshly started
    # `ablate worker` process per batch. The fork path is the default in the other tests here.
    env = {**ENV, "ABLATE_HOME": str(project.home), "ABLATE_FORK": "0"}
    submitted = subprocess.run([ABLATE, "submit", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    worker = subprocess.Popen(
        [ABLATE, "worker", "--study", "limited", "--recycle-after", "2", "--max-trials", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, output
    trials = trials_of(project, "limited")
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 3, TrialState.WAITING: 1}, output
    # Two children (2 + 1 trials), both reporting the worker that was started.
    assert output.count("starting a fresh one") == 1 and "forked from" not in output
    assert {t.user_attrs["ablate.worker"] for t in trials if t.state == TrialState.COMPLETE} == {
        f"{socket.gethostname()}:{worker.pid}"
    }


def test_ctrl_c_interrupts_the_child_once_and_the_next_run_retries(write_study, project) -> None:
    raw = tiny("interrupted", factors={"model.skip": ["concat"]}, repeats=1)
    raw["data"]["train_size"] = 2000
    raw["model"]["filters"] = 4
    raw["train"]["epochs"] = 5  # long enough to be interrupted mid-way, short enough to rerun
    path = write_study(raw)
    command = [ABLATE, "run", str(path), "--home", str(project.home), "--recycle-after", "5"]
    parent = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_interruptible,
    )
    try:
        running = wait_for(lambda: running_trial(project, "interrupted", parent), "a trial past its first epoch")
        child = int(running.user_attrs["ablate.worker"].rsplit(":", 1)[1])
        assert child != parent.pid and alive(child)
        os.killpg(parent.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the foreground group
        _, stderr = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, stderr
    assert "interrupted" in stderr
    wait_for(lambda: not alive(child), "the child to exit")
    trial = trials_of(project, "interrupted")[running.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["ablate.error"].startswith("interrupted")
    client = MlflowClient(project.tracking_uri)
    killed = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags["ablate.state"] == "interrupted"
    assert len(client.get_metric_history(killed.info.run_id, "val_loss")) >= 1  # its epochs were kept

    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    states = [t.state for t in trials_of(project, "interrupted")]
    assert states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING not in states


def test_the_child_dies_with_a_killed_parent(write_study, project) -> None:
    raw = tiny("orphan", factors={"model.skip": ["concat"]}, repeats=1)
    raw["data"]["train_size"] = 2000
    raw["model"]["filters"] = 4
    raw["train"]["epochs"] = 50  # killed long before it ends
    path = write_study(raw)
    parent = subprocess.Popen(
        [ABLATE, "run", str(path), "--home", str(project.home), "--recycle-after", "5"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        running = wait_for(lambda: running_trial(project, "orphan", parent), "a trial past its first epoch")
    finally:
        parent.kill()
        parent.wait(timeout=30)
    child = int(running.user_attrs["ablate.worker"].rsplit(":", 1)[1])
    wait_for(lambda: not alive(child), "the child to die with its parent")


def _interruptible() -> None:
    """Give `ablate run` a terminal's Ctrl-C even when this test runs as a background job.

    A shell starts background jobs with SIGINT ignored, a disposition that survives exec; Python
    then never turns SIGINT into KeyboardInterrupt, and the interrupt under test would be lost.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running_trial(project, name: str, process: subprocess.Popen) -> optuna.trial.FrozenTrial | None:
    if process.poll() is not None:
        output = process.stderr.read()[-3000:] if process.stderr else "(stderr not captured)"
        raise AssertionError(f"ablate run ended (exit {process.returncode}) before its trial was interrupted:\n{output}")
    try:
        trials = optuna.load_study(study_name=name, storage=project.storage).get_trials(states=(TrialState.RUNNING,))
    except Exception:  # the storage is not created yet
        return None
    return next((t for t in trials if t.intermediate_values and t.user_attrs.get("ablate.worker")), None)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(condition, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout}s for {what}")


@pytest.mark.parametrize(
    ("signum", "recycle_after"), [(signal.SIGTERM, "0"), (signal.SIGHUP, "0"), (signal.SIGTERM, "25")]
)
def test_a_signal_ends_run_cleanly_and_says_which(write_study, project, signum: int, recycle_after: str) -> None:
    """`docker stop` / `kill` (SIGTERM) and a closed terminal (SIGHUP) end `ablate run` as Ctrl-C does,
    in this process (`--recycle-after 0`) and through its forked worker (the default)."""
    name = f"signalled-{signal.Signals(signum).name.lower()}-{recycle_after}"
    raw = tiny(name, factors={"model.skip": ["concat"]}, repeats=1)
    raw["data"]["train_size"] = 2000
    raw["model"]["filters"] = 4
    raw["train"]["epochs"] = 5
    path = write_study(raw)
    command = [ABLATE, "run", str(path), "--home", str(project.home), "--recycle-after", recycle_after]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = wait_for(lambda: running_trial(project, name, process), "a trial past its first epoch")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    signal_name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr
    assert f"interrupted by {signal_name}" in stderr
    trial = trials_of(project, name)[running.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["ablate.error"] == f"interrupted by {signal_name}"
    client = MlflowClient(project.tracking_uri)
    killed = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and signal_name in killed.data.tags["ablate.error"]
    experiment = client.get_experiment_by_name(name)
    statuses = {r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert "RUNNING" not in statuses  # the parent run ended too, not left for the next run to repair


@pytest.mark.parametrize("victim", ["fork", "worker"])
def test_a_trial_process_killed_mid_trial_is_retried_by_the_same_run(write_study, project, victim: str) -> None:
    """`kill -9` of the process training a trial (a recycled fork, or a plain worker): the run goes on,
    marks the lost trial FAIL with its MLflow run KILLED, trains its (cell, seed) again, and exits 0."""
    raw = tiny(f"lost-{victim}", factors={"model.skip": ["concat"]}, repeats=2)
    raw["data"]["train_size"] = 2000
    raw["model"]["filters"] = 4
    raw["train"]["epochs"] = 4
    path = write_study(raw)
    name = raw["name"]
    flags = ["--recycle-after", "5"] if victim == "fork" else ["--workers", "2"]
    # A short heartbeat and grace: the other worker judges the lost trial stale in seconds, not the
    # default minute (either way the run retries it; the test accepts both paths).
    parent = subprocess.Popen(
        [ABLATE, "run", str(path), "--home", str(project.home), *flags],
        env={**ENV, "ABLATE_HEARTBEAT": "2", "ABLATE_GRACE": "10"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_for(lambda: running_trial(project, name, parent), "a trial past its first epoch")
        pid = int(running.user_attrs["ablate.worker"].rsplit(":", 1)[1])  # the fork that trains it
        if victim == "worker":  # the warm worker process the fork came from (the fork dies with it)
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert pid != parent.pid
        os.kill(pid, signal.SIGKILL)
        _, stderr = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, stderr
    said = " ".join(stderr.split())
    assert "lost with a worker process that ended mid-trial" in said or "was run again by another worker" in said, said
    trials = trials_of(project, name)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] == 2 and states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0
    lost = trials[running.number]
    assert lost.state == TrialState.FAIL  # by this run once the workers ended, or by a worker's heartbeat check
    client = MlflowClient(project.tracking_uri)
    ended = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert ended.info.status == "KILLED" and ended.data.tags["ablate.state"] == "interrupted"
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
