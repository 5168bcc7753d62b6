"""Bad input, by class: each is refused by `ablate validate` (and `run`) in one line, exit 2, with nothing created.

Two classes of issue 13: what validate used to let through (sizes past the dataset, a missing
`data.path`, infinities, levels equal as values, `true` for a number, duplicate YAML keys, a
`when:` level its parent never takes, absurd totals, seeds past 2**32 - 1), and what used to end
in a traceback (a study file that is not UTF-8 text, a `--home` that cannot be written, a plain
`postgresql://` URL). Every instance runs the real command in-process (`ablate.cli.main`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from ablate.cli.main import main
from conftest import tiny_study

BASE = tiny_study(repeats=1, train={"epochs": 1, "batch_size": 64})


def validate(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    """`ablate validate PATH ARGS...`: its exit code and its stderr on one line."""
    code = main(["validate", str(path), *args])
    err = " ".join(capsys.readouterr().err.split())
    return code, err


def assert_refused(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert err.startswith("error:") and expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # data sizes past the dataset, and a data file that is not there
        (["data.train_size=100000"], "use at most 9,904"),
        (["data.val_size=20000"], "too few for data.val_size=20,000"),
        (["data.dataset=mnist", "data.train_size=70000"], "use at most 60,000"),
        (["data.dataset=mnist", "data.val_size=9000", "data.test_size=2000"], "holds out 10,000"),
        (["data.dataset=mnist", "data.path=missing/mnist.npz"], "mnist.npz: no such file or folder"),
        (["factors.data.train_size=[64, 99999]"], "use at most 9,904"),
        # infinities and NaN, in a setting and in a range
        (["train.learning_rate=.inf"], "train.learning_rate: Input should be a finite number"),
        (["train.max_seconds=.nan"], "train.max_seconds: Input should be a finite number"),
        (["data.noise.factor=-.inf"], "data.noise.factor: Input should be a finite number"),
        (["factors.train.learning_rate={type: float, low: 0.001, high: .inf}"], "high: Input should be a finite number"),
        # levels that are equal as values: the same setting twice, duplicate cells
        (["factors.model.filters=[4, 4.0]"], "factors.model.filters[1] = 4.0 is the same setting"),
        (["model.batch_norm=false", "factors.model.batch_norm=[true, 1]"], "factors.model.batch_norm[1] = 1 is the same setting"),
        (["factors.model.batch_norm=[false, 0]"], "is the same setting"),
        (["factors.train.learning_rate=[0.001, 1e-3]"], "factors.train.learning_rate[1] = 1e-3 is the same setting"),
        # true / false where a number belongs
        (["train.epochs=true"], "train.epochs: expected a number, not true or false"),
        (["seed=false"], "seed: expected a number, not true or false"),
        (["data.val_size=true"], "data.val_size: expected a number"),
        (["factors.model.filters={type: int, low: true, high: 8}"], "expected a number"),
        # a condition on a level its parent never takes
        *[
            (
                ["model.block=residual", "model.residual_blocks=1",
                 "factors.model.residual_blocks={type: int, low: 1, high: 3, step: 2}",
                 f"factors.model.dropout={{levels: [0.1], when: {{model.residual_blocks: {level}}}}}"],
                "never takes",
            )
            for level in ("7", "0", "2", "1.5", "x", "true")
        ],
        # totals nobody means
        (["repeats=1000", "factors.model.filters={type: int, low: 1, high: 8}"], "plans 16,000 trials"),
        (["repeats=100", "train.epochs=5000"], "plans 200 trials, 1,000,000 epochs in all"),
        # seeds past what NumPy and Keras take
        (["seed=4294967296"], "seed: Input should be less than or equal to 4294967295"),
        (["seed=4294967295", "repeats=2"], "past 4,294,967,295"),
        (["data.split_seed=99999999999"], "data.split_seed: Input should be less than or equal to 4294967295"),
    ],
)
def test_validate_refuses_what_would_fail_or_mislead_later(
    capsys: pytest.CaptureFixture[str], write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    overrides: list[str], expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_study(BASE)
    args = [item for override in overrides for item in ("--set", override)]
    code, err = validate(capsys, path, *args)
    assert_refused(code, err, expected)
    assert not (tmp_path / ".ablate").exists()


def test_a_large_study_runs_when_asked(capsys: pytest.CaptureFixture[str], write_study, tmp_path: Path) -> None:
    path = write_study(BASE)
    args = ["--set", "repeats=1000", "--set", "factors.model.filters={type: int, low: 1, high: 8}"]
    code, err = validate(capsys, path, *args)
    assert code == 2 and "--allow-large" in err
    assert main(["validate", str(path), *args, "--allow-large"]) == 0
    assert "16,000 trials, 16,000 epochs in all" in " ".join(capsys.readouterr().out.split())
    # `run` and `submit` refuse it too, before any folder or storage exists.
    for command in ("run", "submit"):
        assert main([command, str(path), *args, "--home", str(tmp_path / "home")]) == 2
        assert "--allow-large" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_validate_prints_the_plan_and_the_data_source(capsys: pytest.CaptureFixture[str], write_study) -> None:
    assert main(["validate", str(write_study(BASE))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 trials, 2 epochs in all" in out and "10,000 MNIST digits" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nname: b\n", "the key 'name' is given twice (first on line 1)"),
        ("name: a\ntrain:\n  epochs: 1\n  epochs: 2\n", "the key 'epochs' is given twice (first on line 3)"),
        ("name: a\nfactors:\n  model.skip: [none]\n  model.skip: [concat]\n", "the key 'model.skip' is given twice"),
        ("name: a\nprofiles:\n  quick: {train.epochs: 1}\n  quick: {train.epochs: 2}\n", "the key 'quick' is given twice"),
    ],
)
def test_a_key_given_twice_is_refused_not_silently_overridden(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert_refused(*validate(capsys, path), expected)


def test_a_key_given_twice_in_a_set_value_is_refused(capsys: pytest.CaptureFixture[str], write_study) -> None:
    code, err = validate(capsys, write_study(BASE), "--set", "train={epochs: 1, epochs: 2}")
    assert_refused(code, err, "the key 'epochs' is given twice")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00n\x00a\x00m\x00e", "not a text file in UTF-8 (byte 0 is 0xff)"),  # UTF-16
        (b"name: caf\xe9\n", "not a text file in UTF-8 (byte 9 is 0xe9)"),  # Latin-1
        (bytes(range(256)), "not a text file in UTF-8"),  # binary
        (b"name: a\x00\x01\n", "not valid YAML"),  # valid UTF-8, but control characters
        (b"\x89PNG\r\n\x1a\n", "not a text file in UTF-8"),
    ],
)
def test_a_study_file_that_is_not_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    assert_refused(*validate(capsys, path), expected)


def test_a_study_file_that_is_a_folder_or_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_refused(*validate(capsys, tmp_path), "no such study file")
    assert_refused(*validate(capsys, tmp_path / "nope.yaml"), "no such study file")


def _homes(tmp_path: Path) -> list[tuple[Path, str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    homes = [(afile, "is a file, not a folder"), (afile / "sub", "cannot create")]
    if Path("/sys/kernel").is_dir():
        homes.append((Path("/sys/kernel"), "cannot write in /sys/kernel"))  # read-only, even for root
    if os.geteuid() != 0:  # root writes through a mode of 0555
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        homes.append((locked, "cannot write in"))
    return homes


@pytest.mark.parametrize("command", ["run", "submit", "ui"])
def test_a_home_that_cannot_be_a_project_folder(
    capsys: pytest.CaptureFixture[str], write_study, tmp_path: Path, command: str
) -> None:
    study = write_study(BASE)
    for home, expected in _homes(tmp_path):
        args = [command] + ([str(study)] if command != "ui" else []) + ["--home", str(home)]
        code = main(args)
        err = " ".join(capsys.readouterr().err.split())
        assert_refused(code, err, expected)
        assert "--home or $ABLATE_HOME" in err


def test_a_sqlite_store_in_a_folder_that_cannot_be_written(
    capsys: pytest.CaptureFixture[str], write_study, tmp_path: Path
) -> None:
    study = write_study(BASE)
    for flag, setting in (("--storage", "--storage or $ABLATE_STORAGE"), ("--tracking-uri", "--tracking-uri or $MLFLOW_TRACKING_URI")):
        url = f"sqlite:///{tmp_path / 'afile' / 'store.db'}"
        (tmp_path / "afile").write_text("x")
        code = main(["run", str(study), "--home", str(tmp_path / "home"), flag, url])
        assert_refused(code, " ".join(capsys.readouterr().err.split()), setting)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_a_plain_postgresql_url_uses_the_installed_driver(capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    code = main(["status", "--storage", f"{scheme}://postgres@127.0.0.1:5432/postgres"])
    assert code == 0, capsys.readouterr().err


def test_a_postgresql_url_without_any_driver(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ablate.project import database_url

    assert database_url("postgresql://u@h/db").startswith("postgresql+psycopg")
    assert database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    for module in ("psycopg", "psycopg2"):  # as if neither were installed: Python's own "import blocked" marker
        monkeypatch.setitem(sys.modules, module, None)
    code = main(["status", "--storage", "postgresql://postgres@127.0.0.1:5432/postgres"])
    assert_refused(code, " ".join(capsys.readouterr().err.split()), "pip install 'ablate[service]'")


def test_every_shipped_study_still_validates(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import REPO

    for path in sorted((REPO / "studies").glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
        yaml.safe_load(path.read_text())
