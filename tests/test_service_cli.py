"""The service's commands through the installed `ablate`, on the embedded default (no servers)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import tiny_study
from test_cli import ablate


@pytest.mark.parametrize("command", [["submit"], ["worker"], ["status"]])
def test_every_service_help_answers(command: list[str], tmp_path: Path) -> None:
    result = ablate(*command, "--help", cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "usage: ablate" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker"], "one of the arguments --study --all is required"),
        (["worker", "--all", "--max-trials", "0"], "expected a whole number >= 1"),
        (["worker", "--all", "--heartbeat", "5", "--grace", "5"], "grace (5s) must be longer than the heartbeat"),
        (["run", "x.yaml", "--gpus", "0,x"], "expected distinct GPU indices"),
        (["run", "x.yaml", "--workers", "0"], "expected a whole number >= 1"),
    ],
)
def test_bad_flags_are_refused_with_the_reason(args: list[str], message: str, tmp_path: Path) -> None:
    result = ablate(*args, cwd=tmp_path, timeout=60)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_worker_on_an_unknown_study_names_the_known_ones(tmp_path: Path, write_study) -> None:
    path = write_study(tiny_study(name="known"))
    assert ablate("submit", str(path), cwd=tmp_path).returncode == 0
    result = ablate("worker", "--study", "nope", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "no study 'nope'" in result.stderr and "known" in result.stderr and "Traceback" not in result.stderr


def test_status_of_an_empty_project_lists_nothing(tmp_path: Path) -> None:
    result = ablate("status", "--json", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"studies": []' in result.stdout
    assert not (tmp_path / ".ablate" / "optuna.db").exists()  # status creates nothing


@pytest.mark.slow
def test_run_with_two_local_workers_runs_each_trial_once(tmp_path: Path, write_study) -> None:
    path = write_study(tiny_study(name="two-workers"))
    result = ablate("run", str(path), "--workers", "2", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[w1]" in result.stderr and "[w2]" in result.stderr
    assert "4/4 complete" in result.stderr
    storage = f"sqlite:///{tmp_path / '.ablate' / 'optuna.db'}"
    trials = optuna.load_study(study_name="two-workers", storage=storage).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted((t.user_attrs["ablate.cell"], t.user_attrs["ablate.seed"]) for t in trials) == [
        ("model.skip=concat", 0), ("model.skip=concat", 1), ("model.skip=none", 0), ("model.skip=none", 1),
    ]
    assert all(t.user_attrs["ablate.worker"] for t in trials)  # run by the workers, not the parent
    client = MlflowClient(f"sqlite:///{tmp_path / '.ablate' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("two-workers")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ablate.role` = 'trial'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`ablate.role` = 'study'")
    assert [p.info.status for p in parent] == ["FINISHED"]


def test_passwords_in_urls_are_scrubbed_from_text() -> None:
    from ablate.redaction import scrub

    text = "could not reach postgresql+psycopg2://bob:p@ss/w@db.example:5432/optuna (http://h:5000/x, me@example.com)"
    assert scrub(text) == "could not reach postgresql+psycopg2://bob:***@db.example:5432/optuna (http://h:5000/x, me@example.com)"
