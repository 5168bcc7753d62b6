"""`ablate audit`: the noise floor of a real tiny study, stored on the study and shown by the report.

Two tiny studies (skip none/concat x 1 seed, 1 epoch, 4 filters, 256 images): one with
`train.deterministic: true`, trained and audited by the `ablate` command in its own processes
(TensorFlow's switch holds for the whole process, so it must not reach pytest's); one without,
trained and audited here through `main`. Bad input exits 2 and creates nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from ablate.cli.main import main
from ablate.project import resolve_project
from ablate.runtime.progress import StudyProgress
from ablate.runtime.run import run_study
from ablate.runtime.studies import _differences
from ablate.spec.attributes import EXPERIMENT_ATTR, NOISE_FLOOR_ATTR, SPEC_ATTR
from ablate.spec.errors import SpecError
from ablate.spec.loading import spec_from_dict

from conftest import tiny_study

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def small(name: str, **train: Any) -> dict[str, Any]:
    return tiny_study(name=name, repeats=1, train={"epochs": 1, "batch_size": 64, **train})


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([ABLATE, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_count(project: Any, study: optuna.Study) -> int:
    client = MlflowClient(tracking_uri=project.tracking_uri)
    return len(client.search_runs([study.user_attrs[EXPERIMENT_ATTR]]))


def report(name: str, home: Path, form: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["report", name, "--home", str(home), "--format", form, "--bootstrap", "0", "--no-log"]) == 0
    return capsys.readouterr().out


def test_deterministic_study_audited_by_the_command_lands_on_the_same_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(small("audit-on", deterministic=True), sort_keys=False))
    ran = ablate("run", str(study_file), "--home", str(home), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    project = resolve_project(home=home)
    study = optuna.load_study(study_name="audit-on", storage=project.storage)
    runs_before, trials_before = run_count(project, study), len(study.get_trials())

    audited = ablate("audit", "audit-on", "--home", str(home), cwd=tmp_path)
    assert audited.returncode == 0, audited.stderr[-2000:]
    study = optuna.load_study(study_name="audit-on", storage=project.storage)
    floor = study.user_attrs[NOISE_FLOOR_ATTR]
    baseline = next(t for t in study.get_trials() if t.user_attrs["ablate.cell"] == "model.skip=none")
    assert floor["trial"] == baseline.number and floor["cell"] == "model.skip=none" and floor["seed"] == 0
    assert floor["original"] == baseline.value and floor["metric"] == "val_loss"
    # TensorFlow's deterministic ops on a CPU: the re-run lands on the same float, bit for bit.
    assert floor["rerun"] == floor["original"] and floor["difference"] == 0.0 and floor["relative"] == 0.0
    assert floor["deterministic"] is True and floor["backend"] == "tensorflow" and floor["device"] == "CPU"
    assert "difference 0 " in audited.stdout and "deterministic ops on" in audited.stdout
    # No Optuna trial and no MLflow run was added.
    assert len(study.get_trials()) == trials_before and run_count(project, study) == runs_before

    answer = json.loads(report("audit-on", home, "json", capsys))
    assert answer["noise_floor"] == floor
    markdown = report("audit-on", home, "md", capsys)
    assert f"Noise floor: two runs of trial {baseline.number} with the same seed landed 0 apart in val_loss" in markdown
    assert "deterministic ops on, tensorflow, CPU" in markdown
    assert "effects smaller than this are within run-to-run noise" in markdown


def test_audit_in_this_process_without_deterministic_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = resolve_project(home=tmp_path / "home")
    with StudyProgress(Console(file=io.StringIO())) as progress:
        assert run_study(spec_from_dict(small("audit-off")), project, progress=progress).complete == 2
    hint = report("audit-off", project.home, "md", capsys)
    assert "Noise floor: not measured; run `ablate audit audit-off` to measure" in hint
    assert json.loads(report("audit-off", project.home, "json", capsys))["noise_floor"] is None

    assert main(["audit", "audit-off", "--home", str(project.home), "--trial", "1"]) == 0
    study = optuna.load_study(study_name="audit-off", storage=project.storage)
    floor = study.user_attrs[NOISE_FLOOR_ATTR]
    assert floor["trial"] == 1 and floor["cell"] == "model.skip=concat" and floor["deterministic"] is False
    assert floor["original"] == study.trials[1].value
    # Measured here: TensorFlow on this CPU repeats itself even without the switch (0.0); another
    # machine may not, so only the floor's size is bounded.
    assert floor["difference"] == abs(floor["rerun"] - floor["original"]) <= 1e-3 * abs(floor["original"])
    assert "deterministic ops off" in report("audit-off", project.home, "md", capsys)


def test_bad_input_exits_2_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = tmp_path / "nowhere"
    assert main(["audit", "any", "--home", str(nowhere)]) == 2
    assert "no studies here" in capsys.readouterr().err and not nowhere.exists()

    project = resolve_project(home=tmp_path / "home")
    project.home.mkdir()
    spec = spec_from_dict(small("never-done")).spec
    study = optuna.create_study(study_name="never-done", storage=project.storage)
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"ablate.cell": "model.skip=none"}))
    home = str(project.home)
    cases = [
        (["audit", "nope", "--home", home], "no study 'nope'"),
        (["audit", "never-done", "--home", home], "has no complete trial"),
        (["audit", "never-done", "--home", home, "--trial", "0"], "trial 0 of study 'never-done' is FAIL"),
        (["audit", "never-done", "--home", home, "--trial", "5"], "trial 5 of study 'never-done' does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as parsed:
        main(["audit", "never-done", "--trial", "-1"])
    assert parsed.value.code == 2
    study = optuna.load_study(study_name="never-done", storage=project.storage)
    assert NOISE_FLOOR_ATTR not in study.user_attrs and len(study.get_trials()) == 1
    assert sorted(p.name for p in project.home.iterdir()) == ["optuna.db"]  # no MLflow store was opened


def test_deterministic_is_a_setting_of_the_file_never_a_factor() -> None:
    assert spec_from_dict(small("det", deterministic=True)).spec.train.deterministic is True
    assert spec_from_dict(small("det")).spec.train.deterministic is False
    with pytest.raises(SpecError, match="process"):
        spec_from_dict(tiny_study(name="det", factors={"train.deterministic": [False, True]}))
    # A study stored before the setting existed resumes while it stays false, and refuses once it is true.
    stored = spec_from_dict(small("det")).spec.fingerprint()
    del stored["train"]["deterministic"]
    assert _differences(stored, spec_from_dict(small("det")).spec.fingerprint()) == []
    assert _differences(stored, spec_from_dict(small("det", deterministic=True)).spec.fingerprint()) == [
        "train.deterministic: None -> True"
    ]
