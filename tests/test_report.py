"""`ablate report` against a tiny real study (real Keras, a real Optuna storage, a real MLflow store),
and its page in a real headless Chromium.

The study is trained once per module (4 trials: skip none/concat x 2 seeds, 2 epochs, 4 filters,
256 images). Every number in the report is checked against what Optuna and MLflow hold.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution
from rich.console import Console

from ablate.analysis.effects import seeds_needed
from ablate.cli.main import build_parser, main
from ablate.project import resolve_project
from ablate.runtime.progress import StudyProgress
from ablate.report.make import make_report
from ablate.report.answer import BaselineError
from ablate.report.figures import split_rows
from ablate.report.render import fmt, fmt_p
from ablate.analysis.importance import conditional_ped_anova, importances, objectives_of
from ablate.spec.loading import load_spec, spec_from_dict
from ablate.spec.attributes import CELL_ATTR, SEED_ATTR, SPEC_ATTR
from ablate.runtime.run import run_study

from conftest import tiny_study

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the studies built here would log every trial


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny end-to-end study of the foundation's test, trained once for this module."""
    root = tmp_path_factory.mktemp("report")
    project = resolve_project(home=root / "home")
    loaded = spec_from_dict(tiny_study(name="tiny-report"))
    with StudyProgress(Console(file=io.StringIO())) as progress:
        outcome = run_study(loaded, project, progress=progress)
    assert outcome.complete == 4
    return project, root


def run_ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([ABLATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def logged_files(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    """Every artifact file under `folder` of a run, however deep."""
    found: set[str] = set()
    for artifact in client.list_artifacts(run_id, folder):
        found |= logged_files(client, run_id, artifact.path) if artifact.is_dir else {artifact.path}
    return found


def rows_in_order(picture: np.ndarray, rows: list[np.ndarray]) -> bool:
    """Whether `picture` holds exactly these pixel blocks one below the other, in this order, with
    only white between them and below the last (so no other row is shown among or after them).

    The first block is searched anywhere; the others in the same columns, each below the last.
    """
    height, width = rows[0].shape
    spots = [(y, x) for y in range(picture.shape[0] - height + 1) for x in range(picture.shape[1] - width + 1)
             if picture[y, x] == rows[0][0, 0] and np.array_equal(picture[y : y + height, x : x + width], rows[0])]
    if not spots:
        return False
    top, left = spots[0]
    end = top + height
    for row in rows[1:]:
        below = [y for y in range(end, picture.shape[0] - row.shape[0] + 1)
                 if np.array_equal(picture[y : y + row.shape[0], left : left + row.shape[1]], row)]
        if not below or (picture[end : below[0], left : left + width] != 255).any():
            return False
        end = below[0] + row.shape[0]
    return bool((picture[end:, left : left + width] == 255).all())


@pytest.mark.slow
def test_report_matches_what_optuna_and_mlflow_hold(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    # A reused folder: what an older report (or anything else) left there must not be logged.
    (tmp_path / "out" / "old").mkdir(parents=True)
    (tmp_path / "out" / "stale.png").write_bytes(b"not this report's")
    (tmp_path / "out" / "old" / "notes.txt").write_text("not this report's")
    report = make_report("tiny-report", project, form="html", out=tmp_path / "out")
    answer = report.answer
    study = optuna.load_study(study_name="tiny-report", storage=project.storage)
    client = MlflowClient(project.tracking_uri)

    # Trials table: one row per Optuna trial, with its state, value, seed, duration and MLflow run.
    trials = {t.number: t for t in study.trials}
    assert [row["number"] for row in answer["trials"]] == sorted(trials)
    for row in answer["trials"]:
        trial = trials[row["number"]]
        assert row["state"] == trial.state.name and row["value"] == trial.value
        assert row["seed"] == trial.user_attrs["ablate.seed"] and row["run_id"] == trial.user_attrs["mlflow_run_id"]
        assert row["params"] == {"model.skip": trial.params["model.skip"]}
        assert row["duration_s"] == pytest.approx(trial.duration.total_seconds())
        assert row["run_url"].endswith(f"/#/experiments/{study.user_attrs['mlflow_experiment_id']}/runs/{row['run_id']}")
        assert client.get_run(row["run_id"]).data.tags["ablate.trial"] == str(trial.number)

    # The effect: skip - no skip, paired by seed, recomputed here from Optuna's values.
    value = {(t.params["model.skip"], t.user_attrs["ablate.seed"]): t.value for t in study.trials}
    diffs = [value[("concat", s)] - value[("none", s)] for s in (0, 1)]
    (effect,) = answer["effects"]
    assert (effect["factor"], effect["level"], effect["baseline"]) == ("model.skip", "concat", "none")
    assert effect["difference"]["mean"] == pytest.approx(np.mean(diffs))
    assert effect["difference"]["n"] == 2 and effect["seeds"] == [0, 1]
    if effect["verdict"] == "unclear":
        needed = seeds_needed(np.std(diffs, ddof=1), float(np.mean(diffs)), current=2)
        assert needed is None or (needed > 2 and f"--set repeats={needed}" in effect["note"])
    # `ablate reproduce` shares the analysis: its table and its verdict for this study are the
    # report's effect and note.
    from ablate.report.reproduction import compare, verdict

    table = compare("skip-vs-noskip", spec_from_dict(tiny_study(name="tiny-report")), project)
    assert table["paired_difference"]["mean"] == effect["difference"]["mean"]
    assert table["paired_difference"]["ci95"] == effect["difference"]["ci95"]
    assert table["paired_difference"]["p_holm"] == effect["p_holm"]
    assert (table["paired_difference"]["verdict"], table["paired_difference"]["note"]) == (effect["verdict"], effect["note"])
    said = verdict(table)
    assert said.startswith("skip - noskip: ") and said.endswith(f": {effect['note']}.")
    assert ("the reference's finding holds" in said) == (effect["verdict"] == "better")
    none_cell = next(c for c in answer["cells"] if c["cell"] == "model.skip=none")
    assert none_cell["estimate"]["mean"] == pytest.approx(np.mean([value[("none", 0)], value[("none", 1)]]))

    # Learning curves: the mean and the band over seeds of MLflow's per-epoch histories.
    for cell, level in (("model.skip=none", "none"), ("model.skip=concat", "concat")):
        run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials if t.params["model.skip"] == level]
        for metric in ("train_loss", "val_loss"):
            histories = [[m.value for m in sorted(client.get_metric_history(r, metric), key=lambda m: m.step)] for r in run_ids]
            curve = answer["curves"][cell][metric]
            assert curve["epochs"] == [1, 2]
            assert curve["mean"] == pytest.approx(np.mean(histories, axis=0).tolist())
            assert curve["low"] == pytest.approx(np.min(histories, axis=0).tolist())
        # The median-seed run of two, in the objective's direction: the seed with the smaller final value.
        median = answer["median_runs"][cell]
        assert median["value"] == min(value[(level, 0)], value[(level, 1)])

    # Best configuration: the cell with the lower mean, as a study file that validates and keeps
    # every fixed setting of the study.
    means = {level: (value[(level, 0)] + value[(level, 1)]) / 2 for level in ("none", "concat")}
    best_level = min(means, key=means.get)
    assert answer["best"]["params"] == {"model.skip": best_level}
    best = load_spec(report.folder / "best.yaml").spec
    assert best.model.skip == best_level and best.model.filters == 4 and best.train.epochs == 2
    assert best.data.train_size == 256 and best.factors == {} and best.name == "tiny-report-best"

    # The folder, and the same folder logged to the study's parent run.
    names = {p.name for p in report.folder.iterdir()}
    assert {"index.html", "report.md", "report.json", "best.yaml", "effects.png", "learning_curves.png",
            "reconstructions.png"} <= names
    assert json.loads((report.folder / "report.json").read_text())["effects"][0]["difference"]["mean"] == pytest.approx(np.mean(diffs))
    assert report.logged_to == study.user_attrs["mlflow_parent_run_id"]
    logged = logged_files(client, report.logged_to, "report")
    assert {"report/index.html", "report/reconstructions.png", "report/best.yaml"} <= logged
    # Exactly the files this report wrote: nothing else the reused folder held.
    assert logged == {f"report/{p.relative_to(report.folder).as_posix()}" for p in report.files}
    assert {"stale.png", "old"} <= names and not any("stale" in path or "old/" in path for path in logged)

    # Reconstructions: clean and noisy rows (the same in both variants: one noise setting), then
    # each variant's reconstruction, every row pixel for pixel the final.png of its median run.
    finals = {cell: split_rows(pixels(Path(client.download_artifacts(run["run_id"], "reconstructions/final.png",
                                                                     str(tmp_path / run["run_id"])))))
              for cell, run in answer["median_runs"].items()}
    none, concat = finals["model.skip=none"], finals["model.skip=concat"]
    assert [r.shape[0] for r in none] == [56, 56, 56]  # 28 px images, scale 2, in three rows
    assert not (none[0] == 255).all() and none[0].std() > 10  # the clean row holds digits, not the gap
    assert np.array_equal(none[1], concat[1])
    assert rows_in_order(pixels(report.folder / "reconstructions.png"), [none[0], none[1], none[2], concat[2]])


@pytest.mark.slow
def test_markdown_json_and_errors_through_the_command(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    home = str(project.home)
    result = run_ablate("report", "tiny-report", "--home", home, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["study"] == "tiny-report" and len(answer["trials"]) == 4
    assert answer["importances"]["computed"] is False and "1 factor varies" in answer["importances"]["reason"]

    result = run_ablate("report", "tiny-report", "--home", home, "--format", "md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert md.startswith("# Study `tiny-report`") and "| `model.skip` | concat - none |" in md
    assert sum(line.startswith("| ") and "COMPLETE" in line for line in md.splitlines()) == 4
    mean = answer["effects"][0]["difference"]["mean"]
    assert f"{mean:.4f}" in md  # the Markdown shows the same numbers as the JSON
    assert "| p (Wilcoxon) |" in md and "| cell | epoch | val_loss | train_loss | seeds |" in md
    assert "`--format md --out DIR`, which writes `learning_curves.png`" in md  # no folder: no picture links
    assert "](learning_curves.png)" not in md and "](reconstructions.png)" not in md
    assert not (tmp_path / "ablate-report").exists()  # md and json print; they write nothing

    unknown = run_ablate("report", "nope", "--home", home, cwd=tmp_path)
    assert unknown.returncode == 2 and "no study 'nope'" in unknown.stderr and "tiny-report" in unknown.stderr
    nowhere = run_ablate("report", "tiny-report", "--home", str(tmp_path / "empty"), cwd=tmp_path)
    assert nowhere.returncode == 2 and "no studies here" in nowhere.stderr
    assert not (tmp_path / "empty").exists()  # a report from the wrong folder creates nothing


@pytest.mark.slow
def test_markdown_with_out_gives_the_pages_answer_and_pictures(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    out = tmp_path / "md"
    report = make_report("tiny-report", project, form="md", out=out, bootstrap=0)
    md = (out / "report.md").read_text()
    assert md == report.text
    # The effects table has the page's columns, Wilcoxon's p among them.
    (effect,) = report.answer["effects"]
    assert "| seeds | p (t) | p (Holm) | p (Wilcoxon) | MDE (80%) | equivalence | verdict |" in md
    assert (f"| {fmt_p(effect['p_value'])} | {fmt_p(effect['p_holm'])} | {fmt_p(effect['wilcoxon_p'])} | "
            f"{fmt(effect['mde80'])} | - | {effect['verdict']} |") in md
    assert "| component |" not in md  # a grid: the leave-one-out column is one-at-a-time's
    # The page's pictures, written beside the Markdown and linked from it; nothing else written.
    for picture in ("effects.png", "learning_curves.png", "reconstructions.png"):
        assert f"]({picture})" in md, picture
        assert_not_blank(pixels(out / picture), picture)
    assert set(report.files) == {out / name for name in ("effects.png", "learning_curves.png", "reconstructions.png", "report.md")}
    # The final epoch of each curve per variant: the mean over seeds of MLflow's last values.
    study = optuna.load_study(study_name="tiny-report", storage=project.storage)
    client = MlflowClient(project.tracking_uri)
    for level in ("none", "concat"):
        run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials if t.params["model.skip"] == level]
        last = {metric: np.mean([max(client.get_metric_history(r, metric), key=lambda m: m.step).value for r in run_ids])
                for metric in ("val_loss", "train_loss")}
        assert f"| model.skip={level} | 2 | {last['val_loss']:.4f} | {last['train_loss']:.4f} | 2 |" in md


@pytest.mark.slow
def test_reconstructions_of_a_noise_study_show_each_variants_own_input(tmp_path: Path) -> None:
    # Two noise levels: the variants see different noisy inputs of the same clean images, so each
    # reconstruction is shown under its own noisy row, never under the other variant's.
    project = resolve_project(home=tmp_path / "home")
    raw = tiny_study(name="tiny-noise", data={"dataset": "mnist-embedded", "train_size": 64, "val_size": 16, "test_size": 16},
                     model={"filters": 2, "depth": 2}, train={"epochs": 1, "batch_size": 32},
                     factors={"data.noise.factor": [0.2, 0.7]}, repeats=1)
    assert train_quietly(raw, project).complete == 2
    report = make_report("tiny-noise", project, form="md", out=tmp_path / "md", bootstrap=0)
    client = MlflowClient(project.tracking_uri)
    runs = report.answer["median_runs"]
    assert list(runs) == ["data.noise.factor=0.2", "data.noise.factor=0.7"]
    low, high = (split_rows(pixels(Path(client.download_artifacts(run["run_id"], "reconstructions/final.png",
                                                                   str(tmp_path / run["run_id"])))))
                 for run in runs.values())
    assert np.array_equal(low[0], high[0]) and not np.array_equal(low[1], high[1])  # same clean, other noise
    picture = pixels(tmp_path / "md" / "reconstructions.png")
    assert rows_in_order(picture, [low[0], low[1], low[2], high[1], high[2]])
    assert not rows_in_order(picture, [low[0], low[1], low[2], high[2]])  # the old layout: one noisy row for all
    assert "](reconstructions.png)" in report.text


def test_median_run_of_an_even_count_is_the_better_middle_seed(tmp_path: Path) -> None:
    project = resolve_project(home=tmp_path / "home")
    values = [0.4, 0.2, 0.1, 0.3]  # the middle two: 0.2 (seed 1) and 0.3 (seed 3)
    for direction, seed in (("minimize", 1), ("maximize", 3)):
        raw = tiny_study(name=f"median-{direction}", objective={"metric": "val_psnr", "direction": direction}, repeats=4)
        name = make_stored_study(project, raw, [({"model.skip": skip}, s, v + (skip == "concat"))
                                                for skip in ("none", "concat") for s, v in enumerate(values)])
        median = make_report(name, project, form="json", bootstrap=0).answer["median_runs"]["model.skip=none"]
        assert (median["seed"], median["value"], median["of"]) == (seed, values[seed], 4), direction


def test_a_study_without_a_parent_run_says_its_report_was_not_logged(
    planted_grid: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project, name, _ = planted_grid
    assert main(["report", name, "--home", str(project.home), "--out", str(tmp_path / "page"), "--bootstrap", "0"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"not logged to MLflow: study '{name}' records no MLflow parent run" in said
    report = make_report(name, project, form="html", out=tmp_path / "again", bootstrap=0)
    assert report.logged_to is None and "mlflow_parent_run_id" in report.not_logged
    assert make_report(name, project, form="html", out=tmp_path / "quiet", bootstrap=0, log=False).not_logged is None


def test_reproduce_verdict_is_the_reports_note_against_the_reference() -> None:
    from ablate.report.reproduction import verdict

    def result(kind: str, mean: float) -> dict[str, Any]:
        return {"paired_difference": {"of": "skip - noskip", "verdict": kind, "note": f"the analysis' note ({kind})", "mean": mean},
                "reference": {"noskip": 0.1664, "skip": 0.14, "epochs": 20}, "direction": "minimize"}

    assert verdict(result("better", -0.02)) == "skip - noskip: the reference's finding holds: the analysis' note (better)."
    assert verdict(result("worse", 0.02)) == "skip - noskip: the opposite of the reference: the analysis' note (worse)."
    for kind in ("unclear", "insufficient", "untestable"):
        assert verdict(result(kind, -0.02)) == f"skip - noskip: no answer yet ({kind}): the analysis' note ({kind})."


def test_importances_rank_a_planted_factor_first_with_a_bootstrap_range() -> None:
    # A real (in-memory) Optuna study: factor a moves the value by 1.0, factor b by nothing.
    distributions = {"model.skip": CategoricalDistribution(["none", "concat"]), "model.filters": CategoricalDistribution([4, 8, 16])}
    rng = np.random.default_rng(0)
    trials = [
        optuna.trial.create_trial(
            params={"model.skip": skip, "model.filters": filters}, distributions=distributions,
            value=float((skip == "concat") * 1.0 + rng.normal(0, 0.05)),
        )
        for skip in ("none", "concat") for filters in (4, 8, 16) for _ in range(3)
    ]
    result = importances(trials, [{"metric": "val_loss", "direction": "minimize"}], resamples=8)
    assert result["computed"] and result["resamples"] == 8 and result["trials"] == 18
    (objective,) = result["objectives"]
    for evaluator in ("fanova", "ped_anova"):  # both evaluators, through the same resamples
        first, second = objective[evaluator]["factors"]
        assert first["factor"] == "model.skip" and first["importance"] > 0.8 > second["importance"], evaluator
        assert 0 <= first["range"][0] <= first["range"][1] <= 1 and first["resamples"] == 8
    assert objective["fanova"]["factors"][0]["range"][0] <= objective["fanova"]["factors"][0]["importance"]
    assert result["params"]["conditional"] == {}
    assert result["notes"] == ["only 18 complete trials: the importances are a rough guide, as their wide ranges show"]
    assert importances(trials, [{"metric": "val_loss", "direction": "minimize"}], resamples=0)["computed"] is False


SEARCHED_FACTORS = {
    "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "data.noise.factor": {"type": "float", "low": 0.0, "high": 1.0},
    "model.depth": {"type": "int", "low": 1, "high": 2},
    "model.block": ["plain", "residual"],
    "model.residual_blocks": {"type": "int", "low": 1, "high": 3, "when": {"model.block": "residual"}},
}


def test_importances_of_values_that_do_not_vary_say_so_instead_of_failing() -> None:
    distributions = {"model.skip": CategoricalDistribution(["none", "concat"]), "model.filters": CategoricalDistribution([4, 8])}
    trials = [optuna.trial.create_trial(params={"model.skip": skip, "model.filters": f}, distributions=distributions, value=0.5)
              for skip in ("none", "concat") for f in (4, 8) for _ in range(2)]
    result = importances(trials, [{"metric": "val_loss", "direction": "minimize"}], resamples=2)
    (objective,) = result["objectives"]
    assert objective["fanova"]["computed"] is False and "do not vary" in objective["fanova"]["reason"]
    assert any("zero total variance" in note for note in result["notes"])  # Optuna's word, passed on


def searched_study(n_trials: int = 60, seed: int = 0, storage: str | None = None, name: str | None = None) -> optuna.Study:
    """A real random search over mixed params (SEARCHED_FACTORS): only the log-float learning rate matters.

    `model.residual_blocks` is conditional (it exists only when `model.block` is residual), as a
    searched study with a `when:` factor makes it.
    """
    rng = np.random.default_rng(seed)

    def objective(trial: optuna.Trial) -> float:
        rate = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
        trial.suggest_float("data.noise.factor", 0.0, 1.0)  # planted: no effect at all
        trial.suggest_int("model.depth", 1, 2)
        if trial.suggest_categorical("model.block", ["plain", "residual"]) == "residual":
            trial.suggest_int("model.residual_blocks", 1, 3)
        trial.set_user_attr(CELL_ATTR, f"trial-{trial.number}")
        trial.set_user_attr(SEED_ATTR, trial.number % 2)
        return float(np.log10(rate) + rng.normal(0, 0.05))

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    if storage is None:
        return study
    stored = optuna.create_study(storage=storage, study_name=name)  # one write per trial: quick on SQLite
    stored.add_trials(study.trials)
    return stored


def test_importances_of_a_searched_study_with_mixed_and_conditional_params() -> None:
    study = searched_study()
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    with_blocks = sum("model.residual_blocks" in t.params for t in complete)
    assert 0 < with_blocks < len(complete)  # the conditional param is missing in some trials

    result = importances(study.trials, objectives_of({}, ["minimize"]), resamples=6)
    assert result["computed"] and result["trials"] == 60
    params = result["params"]
    assert params["conditional"] == {"model.residual_blocks": with_blocks}
    assert set(params["in_every_trial"]) == {"train.learning_rate", "data.noise.factor", "model.depth", "model.block"}
    (objective,) = result["objectives"]
    fanova = {r["factor"]: r for r in objective["fanova"]["factors"]}
    ped = {r["factor"]: r for r in objective["ped_anova"]["factors"]}
    # fANOVA only sees the params every trial has; the report says the conditional one is left out.
    assert "model.residual_blocks" not in fanova
    note = next(n for n in result["notes"] if n.startswith("model.residual_blocks is conditional"))
    assert f"present in {with_blocks} of 60 complete trials" in note and "fANOVA leaves it out" in note
    if conditional_ped_anova():  # Optuna 5: PED-ANOVA ranks conditional params too
        assert "model.residual_blocks" in ped and "PED-ANOVA includes it" in note
    # The planted dependence: the learning rate comes first, the noise factor far below it.
    for evaluator, rows in (("fanova", fanova), ("ped_anova", ped)):
        assert objective[evaluator]["factors"][0]["factor"] == "train.learning_rate", evaluator
        assert rows["train.learning_rate"]["importance"] > 0.5 > rows["data.noise.factor"]["importance"]
        assert rows["train.learning_rate"]["importance"] > 5 * rows["data.noise.factor"]["importance"]
    assert fanova["train.learning_rate"]["range"][0] > fanova["data.noise.factor"]["range"][1]


def test_searched_study_report_ranks_importances_and_gives_the_best_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = resolve_project(home=tmp_path / "home")
    project.home.mkdir(parents=True)
    spec = spec_from_dict(tiny_study(name="searched", design="search", search={"sampler": "random", "trials": 40},
                                     repeats=2, factors=SEARCHED_FACTORS)).spec
    study = searched_study(40, storage=project.storage, name=spec.name)
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    report = make_report(spec.name, project, form="md", bootstrap=4)
    answer = report.answer
    assert answer["design"]["enumerated"] is False and answer["effects"] == [] and answer["cells"] == []
    assert answer["design"]["factors"]["train.learning_rate"]["type"] == "float"
    assert answer["design"]["factors"]["model.block"] == ["plain", "residual"]
    (objective,) = answer["importances"]["objectives"]
    assert objective["fanova"]["factors"][0]["factor"] == "train.learning_rate"
    assert objective["ped_anova"]["factors"][0]["factor"] == "train.learning_rate"
    # The best trial, as a study file that validates, with a word on its single seed.
    best_trial = min(study.trials, key=lambda t: t.value)
    best = answer["best"]
    assert best["trial"] == best_trial.number and best["params"] == best_trial.params
    assert "one configuration once" in best["note"]
    rebuilt = spec_from_dict(yaml.safe_load(best["study_file"])).spec
    assert rebuilt.train.learning_rate == pytest.approx(best_trial.params["train.learning_rate"]) and rebuilt.factors == {}
    # The trials table leaves a switched-off conditional param out instead of showing null.
    off = next(t for t in answer["trials"] if study.trials[t["number"]].params["model.block"] == "plain")
    assert "model.residual_blocks" not in off["params"]
    md = report.text
    assert "model.residual_blocks is conditional" in md and "fANOVA leaves it out" in md
    # --baseline has nothing to choose in a search.
    assert main(["report", spec.name, "--home", str(project.home), "--format", "md", "--baseline", "model.block=plain"]) == 2
    assert "has no levels to compare against" in capsys.readouterr().err


def test_one_at_a_time_report_compares_with_the_study_baseline(tmp_path: Path) -> None:
    project = resolve_project(home=tmp_path / "home")
    raw = tiny_study(name="oat", design="one-at-a-time", baseline={"model.skip": "concat"}, repeats=3,
                     factors={"model.skip": ["none", "concat"], "model.filters": [4, 8, 16]})
    spec = spec_from_dict(raw).spec
    planted = {("concat", 4): 0.10, ("none", 4): 0.14, ("concat", 8): 0.09, ("concat", 16): 0.085}
    offsets = [0.0, 0.01, -0.01]
    rows = [(cell, seed, planted[(cell["model.skip"], cell["model.filters"])] + offsets[seed] + 0.001 * (seed == 1) * (i % 2))
            for i, cell in enumerate(spec.cells()) for seed in range(3)]
    name = make_stored_study(project, raw, rows)
    answer = make_report(name, project, form="md", bootstrap=0).answer
    assert answer["design"]["baseline"] == {"model.skip": "concat", "model.filters": 4}  # the study's reference
    effects = {(e["factor"], e["level"]): e for e in answer["effects"]}
    assert set(effects) == {("model.skip", "none"), ("model.filters", 8), ("model.filters", 16)}
    assert effects[("model.skip", "none")]["difference"]["mean"] == pytest.approx(0.04, abs=0.001)
    assert effects[("model.filters", 16)]["difference"]["mean"] == pytest.approx(-0.015, abs=0.001)
    assert len(answer["cells"]) == 4 and answer["best"]["params"] == {"model.skip": "concat", "model.filters": 16}
    chosen = make_report(name, project, form="md", bootstrap=0, baselines=["model.filters=8"]).answer
    effects = {(e["factor"], e["level"]): e for e in chosen["effects"]}
    assert effects[("model.filters", 4)]["baseline"] == 8
    assert effects[("model.filters", 4)]["difference"]["mean"] == pytest.approx(0.01, abs=0.001)  # 0.10 - 0.09


def two_objective_study(storage: str | None = None, name: str | None = None) -> tuple[optuna.Study, set[int]]:
    """A real 2-objective study (minimise val_loss, maximise val_psnr) with a known Pareto front.

    Five hand-placed trials: (0.1, 20), (0.2, 25), (0.3, 24), (0.4, 30), (0.5, 10); the third is
    dominated by the second and the fifth by all, so the front is trials 0, 1 and 3. Then random
    trials where `model.filters` drives the loss and `train.learning_rate` the PSNR, placed
    behind the front so it stays the same.
    """
    spec = {"name": name or "two-objectives", "objective": [{"metric": "val_loss", "direction": "minimize"},
                                                           {"metric": "val_psnr", "direction": "maximize"}]}
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=3))
    study.set_user_attr(SPEC_ATTR, spec)
    distributions = {"model.filters": optuna.distributions.IntDistribution(4, 64),
                     "train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for k, values in enumerate([(0.1, 20.0), (0.2, 25.0), (0.3, 24.0), (0.4, 30.0), (0.5, 10.0)]):
        study.add_trial(optuna.trial.create_trial(params={"model.filters": 4 + k, "train.learning_rate": 1e-3},
                                                  distributions=distributions, values=list(values),
                                                  user_attrs={CELL_ATTR: f"trial-{k}", SEED_ATTR: 0}))
    rng = np.random.default_rng(3)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        filters = trial.suggest_int("model.filters", 4, 64)
        rate = trial.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True)
        trial.set_user_attr(CELL_ATTR, f"trial-{trial.number}")
        trial.set_user_attr(SEED_ATTR, trial.number % 2)
        # behind the front: loss >= 0.6 > 0.5, PSNR <= 9 < 10
        return 0.6 + filters / 64 + rng.normal(0, 0.01), 9.0 + np.log10(rate) + rng.normal(0, 0.02)

    study.optimize(objective, n_trials=35)
    if storage is None:
        return study, {0, 1, 3}
    stored = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "maximize"])
    stored.set_user_attr(SPEC_ATTR, spec)
    stored.add_trials(study.trials)  # one write per trial: quick on SQLite
    return stored, {0, 1, 3}


def test_multi_objective_importances_per_objective_and_the_pareto_front() -> None:
    from ablate.analysis.pareto import pareto_front

    study, front = two_objective_study()
    objectives = objectives_of(study.user_attrs[SPEC_ATTR], ["minimize", "maximize"])
    assert [o["metric"] for o in objectives] == ["val_loss", "val_psnr"]
    # The spec's objective may also be one mapping (single-objective studies), or missing.
    assert objectives_of({"objective": {"metric": "val_mse", "direction": "minimize"}}, ["minimize"]) == [
        {"metric": "val_mse", "direction": "minimize"}]
    assert objectives_of({}, ["minimize", "maximize"])[1] == {"metric": "objective 1", "direction": "maximize"}

    pareto = pareto_front(study, objectives)
    assert {t["number"] for t in pareto["front"]} == front
    assert [t["values"] for t in pareto["front"]] == [[0.1, 20.0], [0.2, 25.0], [0.4, 30.0]]  # sorted by the first
    assert pareto["complete"] == 40 and sum(t["on_front"] for t in pareto["trials"]) == 3
    assert pareto_front(searched_study(n_trials=5), objectives_of({}, ["minimize"])) is None  # one objective: none

    # Importances on the random trials (the hand-placed five follow no law): one ranking per objective.
    result = importances(study.trials[5:], objectives, resamples=4)
    loss, psnr = result["objectives"]
    assert (loss["metric"], psnr["metric"], psnr["direction"]) == ("val_loss", "val_psnr", "maximize")
    for evaluator in ("fanova", "ped_anova"):  # each objective ranks its own driver first (Optuna's target=)
        assert loss[evaluator]["factors"][0]["factor"] == "model.filters", evaluator
        assert psnr[evaluator]["factors"][0]["factor"] == "train.learning_rate", evaluator


def make_stored_study(project: Any, spec: dict[str, Any], rows: list[tuple[dict[str, Any], int, float]]) -> str:
    """A grid study as `ablate run` stores it (spec attr, cell and seed attrs, categorical params),
    with planted values instead of training: the report's statistics without Keras."""
    loaded = spec_from_dict(spec).spec
    project.home.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=loaded.name, storage=project.storage, direction=loaded.primary.direction)
    study.set_user_attr(SPEC_ATTR, loaded.model_dump(mode="json"))
    levels = loaded.levels
    for params, seed, value in rows:
        from ablate.spec.levels import cell_key

        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: CategoricalDistribution(levels[n]) for n in params}, value=value,
            user_attrs={CELL_ATTR: cell_key(params), SEED_ATTR: seed},
        ))
    return loaded.name


@pytest.fixture
def planted_grid(tmp_path: Path) -> tuple[Any, str, dict[tuple[str, int, int], float]]:
    """skip x filters x 3 seeds: concat lowers the loss by 0.05 against none; filters do nothing."""
    project = resolve_project(home=tmp_path / "home")
    rng = np.random.default_rng(5)
    offsets = rng.normal(0, 0.02, size=3)
    values = {
        (skip, filters, seed): float(0.12 + offsets[seed] - 0.05 * (skip == "concat") + rng.normal(0, 0.002))
        for skip in ("none", "concat") for filters in (4, 8) for seed in range(3)
    }
    name = make_stored_study(
        project, tiny_study(name="planted-grid", factors={"model.skip": ["none", "concat"], "model.filters": [4, 8]}, repeats=3),
        [({"model.skip": skip, "model.filters": filters}, seed, v) for (skip, filters, seed), v in values.items()],
    )
    return project, name, values


def test_baseline_option_through_the_parser_and_the_answer(planted_grid: Any, capsys: pytest.CaptureFixture[str]) -> None:
    project, name, values = planted_grid
    args = build_parser().parse_args(["report", name, "--baseline", "model.skip=concat", "--baseline", "model.filters=8"])
    assert args.baseline == ["model.skip=concat", "model.filters=8"]

    default = make_report(name, project, form="md", bootstrap=0).answer
    chosen = make_report(name, project, form="md", bootstrap=0, baselines=args.baseline).answer
    by_factor = {e["factor"]: e for e in default["effects"]}
    assert (by_factor["model.skip"]["level"], by_factor["model.skip"]["baseline"]) == ("concat", "none")
    assert default["design"]["baseline"] == {"model.skip": "none", "model.filters": 4}
    assert chosen["design"]["baseline"] == {"model.skip": "concat", "model.filters": 8}
    assert chosen["design"]["baseline_chosen"] == ["model.filters", "model.skip"]
    flipped = {e["factor"]: e for e in chosen["effects"]}
    assert (flipped["model.skip"]["level"], flipped["model.skip"]["baseline"]) == ("none", "concat")
    assert (flipped["model.filters"]["level"], flipped["model.filters"]["baseline"]) == (4, 8)
    # The same paired differences with the sign turned: none - concat, per seed, averaged over filters.
    per_seed = [np.mean([values[("none", f, s)] - values[("concat", f, s)] for f in (4, 8)]) for s in range(3)]
    assert flipped["model.skip"]["difference"]["mean"] == pytest.approx(np.mean(per_seed))
    assert flipped["model.skip"]["difference"]["mean"] == pytest.approx(-by_factor["model.skip"]["difference"]["mean"])
    assert flipped["model.skip"]["difference"]["ci95"][0] > 0 and flipped["model.skip"]["verdict"] == "worse"
    assert "0.05" in f"{flipped['model.skip']['difference']['mean']:.2f}"

    # Through the whole command: json on stdout, and the Markdown says which baselines were chosen.
    home = str(project.home)
    assert main(["report", name, "--home", home, "--format", "json", "--bootstrap", "0", "--baseline", "model.skip=concat"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["effects"][0]["baseline"] == "concat" and answer["effects"][0]["level"] == "none"
    assert main(["report", name, "--home", home, "--format", "md", "--bootstrap", "0", "--baseline", "model.skip=concat"]) == 0
    assert "`model.skip=concat` (--baseline)" in capsys.readouterr().out

    # A level that is not one of the factor's levels: exit 2, what was wrong and the valid levels.
    assert main(["report", name, "--home", home, "--format", "md", "--baseline", "model.skip=residual"]) == 2
    err = capsys.readouterr().err
    assert "'residual' is not a level of model.skip" in err and "its levels are: none, concat" in err
    assert main(["report", name, "--home", home, "--format", "md", "--baseline", "model.depth=2"]) == 2
    err = capsys.readouterr().err
    assert "model.depth is not a factor" in err and "model.skip (none, concat)" in err and "model.filters (4, 8)" in err
    for bad, message in (("model.skip", "expected FACTOR=LEVEL"), ("model.filters=16", "its levels are: 4, 8")):
        with pytest.raises(BaselineError, match=message):
            make_report(name, project, form="md", bootstrap=0, baselines=[bad])
    with pytest.raises(BaselineError, match="given twice"):
        make_report(name, project, form="md", bootstrap=0, baselines=["model.skip=none", "model.skip=concat"])


def test_grid_report_ranks_importances_with_both_evaluators(planted_grid: Any) -> None:
    project, name, _ = planted_grid
    report = make_report(name, project, form="md", bootstrap=5)
    imp = report.answer["importances"]
    assert imp["computed"] and imp["evaluators"] == ["fanova", "ped_anova"]
    (objective,) = imp["objectives"]
    assert objective["fanova"]["factors"][0]["factor"] == "model.skip" == objective["ped_anova"]["factors"][0]["factor"]
    md = report.text
    assert "| factor | fANOVA | range | PED-ANOVA | range |" in md and "| `model.skip` | " in md
    assert "PED-ANOVA: Optuna PED-ANOVA" in md and "5 resamples" in md


@pytest.fixture
def stored_two_objectives(tmp_path: Path) -> tuple[Any, str, set[int]]:
    """The 2-objective study as `ablate run` would store a searched one: in the project's storage,
    with a validated search spec (two objectives need design: search)."""
    project = resolve_project(home=tmp_path / "home")
    project.home.mkdir(parents=True)
    spec = spec_from_dict(tiny_study(
        name="two-objectives", design="search", search={"sampler": "nsga2", "trials": 40},
        objective=[{"metric": "val_loss", "direction": "minimize"}, {"metric": "val_psnr", "direction": "maximize"}],
        factors={"model.filters": {"type": "int", "low": 4, "high": 64},
                 "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    )).spec
    study, front = two_objective_study(project.storage, spec.name)
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    return project, spec.name, front


def test_multi_objective_report_shows_the_pareto_front_in_every_form(stored_two_objectives: Any, tmp_path: Path) -> None:
    project, name, front = stored_two_objectives
    report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=3, log=False)
    answer = report.answer
    assert [o["metric"] for o in answer["objectives"]] == ["val_loss", "val_psnr"]
    assert {t["number"] for t in answer["pareto"]["front"]} == front
    assert answer["effects"] == [] and answer["best"] is None  # a search: no levels; two objectives: no single best
    assert [o["metric"] for o in answer["importances"]["objectives"]] == ["val_loss", "val_psnr"]
    assert answer["trials"][1]["values"] == [0.2, 25.0]
    names = {p.name for p in report.folder.iterdir()}
    assert {"index.html", "pareto.png", "importances.png", "report.md", "report.json"} <= names
    from PIL import Image

    for png in ("pareto.png", "importances.png"):
        pixels = np.asarray(Image.open(report.folder / png).convert("L"))
        assert pixels.std() > 5, f"{png} is blank"
    page = (report.folder / "index.html").read_text()
    assert 'id="chart-pareto"' in page and 'id="pareto-table"' in page and page.count('<tr class="pareto">') == 3
    assert external_references(page) == []  # still self-contained
    md = (report.folder / "report.md").read_text()
    assert "## Pareto front" in md and "| val_loss (min) | val_psnr (max) |" in md
    assert "| 3 | 0.4000 | 30.0000 |" in md and "### maximize `val_psnr`" in md
    assert "samples its configurations instead of enumerating levels" in md
    assert main(["report", name, "--home", str(project.home), "--format", "md", "--baseline", "model.filters=8"]) == 2


# ---- the family sections: diffusion chains and samples, ensemble weights and scores ----------------


def train_quietly(raw: dict[str, Any], project: Any) -> Any:
    """Run a study file dict with `ablate run`'s own code, its progress drawn to nowhere."""
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(spec_from_dict(raw), project, progress=progress)


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"))


def assert_not_blank(picture: np.ndarray, what: str) -> None:
    assert picture.std() > 5 and len(np.unique(picture)) > 10, f"{what} is blank"


@pytest.fixture(scope="module")
def diffusion_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny real diffusion study: T in {1, 2}, one seed, one epoch, 2 filters, 64 training images."""
    project = resolve_project(home=tmp_path_factory.mktemp("diffusion-report") / "home")
    raw = tiny_study(
        name="tiny-chains",
        data={"dataset": "mnist-embedded", "train_size": 64, "val_size": 16, "test_size": 16},
        model={"family": "diffusion", "filters": 2, "depth": 2},
        diffusion={"steps": 2, "magnitude": 0.5},
        train={"epochs": 1, "batch_size": 32},
        factors={"diffusion.steps": [1, 2]},
        repeats=1,
        objective={"metric": "val_chain_loss"},
    )
    outcome = train_quietly(raw, project)
    assert (outcome.complete, outcome.failed) == (2, 0)
    return project, "tiny-chains"


@pytest.mark.slow
def test_diffusion_report_shows_each_variants_chain_and_samples(diffusion_study: Any, tmp_path: Path) -> None:
    project, name = diffusion_study
    client = MlflowClient(project.tracking_uri)
    study = optuna.load_study(study_name=name, storage=project.storage)
    runs = {f"diffusion.steps={t.params['diffusion.steps']}": t.user_attrs["mlflow_run_id"] for t in study.trials}

    # JSON without --out: the pictures are named by their MLflow artifact URIs; nothing is written.
    answer = make_report(name, project, form="json", bootstrap=0).answer
    section = answer["diffusion"]
    assert answer["family"] == "diffusion" and answer["ensemble"] is None
    assert section["metric"] == "val_chain_loss"
    assert [v["cell"] for v in section["variants"]] == ["diffusion.steps=1", "diffusion.steps=2"]
    for variant in section["variants"]:
        run_id = runs[variant["cell"]]
        assert variant["run_id"] == run_id == answer["median_runs"][variant["cell"]]["run_id"]
        assert variant["settings"]["steps"] == int(variant["cell"][-1]) and variant["settings"]["conditioned"] is False
        for image, artifact in (("chain", "diffusion/chain.png"), ("samples", "diffusion/samples.png")):
            entry = variant["images"][image]
            assert entry == {"artifact": artifact, "run_id": run_id, "uri": f"runs:/{run_id}/{artifact}", "found": True, "file": None}
    assert not (tmp_path / "ablate-report").exists()

    # Markdown with --out: the pictures are copied there, byte for byte, and linked side by side.
    out = tmp_path / "md"
    report = make_report(name, project, form="md", out=out, bootstrap=0)
    md = (out / "report.md").read_text()
    assert md == report.text and "## Diffusion: reverse chains and samples from noise" in md
    for variant in report.answer["diffusion"]["variants"]:
        trial, run_id = variant["trial"], variant["run_id"]
        assert f"| ![chain of {variant['cell']}](diffusion/trial{trial}-chain.png) | ![samples of {variant['cell']}](diffusion/trial{trial}-samples.png) |" in md
        for image in ("chain", "samples"):
            copied = out / variant["images"][image]["file"]
            original = Path(client.download_artifacts(run_id, f"diffusion/{image}.png", str(tmp_path / run_id)))
            assert copied.read_bytes() == original.read_bytes()
            assert_not_blank(pixels(copied), f"{variant['cell']} {image}")
        # The chain's columns: x_T .. x_0 (T + 1 frames), then the clean image; 4 validation images as rows.
        assert pixels(out / variant["images"]["chain"]["file"]).shape == ((4 * 30 - 2) * 2, ((variant["settings"]["steps"] + 2) * 30 - 2) * 2)
        assert pixels(out / variant["images"]["samples"]["file"]).shape == ((4 * 30 - 2) * 2, ((variant["settings"]["steps"] + 1) * 30 - 2) * 2)

    # The page: the four pictures inlined, the curves with the objective's metric beside the losses.
    page_report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=0, log=False)
    page = (page_report.folder / "index.html").read_text()
    assert page.count('<img class="diffusion ') == 4 and 'id="reconstructions"' not in page
    assert 'id="diffusion"' in page and "T=2 steps of normal noise" in page
    curves = page_report.answer["curves"]
    for cell, run_id in runs.items():
        history = [m.value for m in client.get_metric_history(run_id, "val_chain_loss")]
        assert curves[cell]["val_chain_loss"]["mean"] == pytest.approx(history)
        assert curves[cell]["val_loss"]["epochs"] == [1]
    assert "dotted: val_chain_loss" in page
    assert {"learning_curves.png", "report.md", "report.json", "diffusion"} <= {p.name for p in page_report.folder.iterdir()}
    # The page shows chains, not reconstructions: no final.png is fetched and no reconstructions.png drawn.
    assert not (page_report.folder / "reconstructions.png").exists() and "reconstructions" not in page_report.answer["pictures"]
    assert {page_report.folder / v["images"][i]["file"] for v in page_report.answer["diffusion"]["variants"]
            for i in ("chain", "samples")} <= set(page_report.files)
    stored = json.loads((page_report.folder / "report.json").read_text())
    assert stored["diffusion"]["variants"][0]["images"]["chain"]["file"] == "diffusion/trial0-chain.png"


WEIGHT_SOURCE = "tiny-weight-members"


@pytest.fixture(scope="module")
def weight_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny autoencoder study (3 seeds, 3 saved models, 1 epoch), then a real 20-trial weight study of them."""
    project = resolve_project(home=tmp_path_factory.mktemp("ensemble-report") / "home")
    members = tiny_study(name=WEIGHT_SOURCE, data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32},
                         train={"epochs": 1, "batch_size": 64}, factors={"model.skip": ["concat"]}, repeats=3)
    assert train_quietly(members, project).complete == 3
    raw = {
        "name": "tiny-weights",
        "model": {"family": "ensemble"},
        "ensemble": {"source": "study", "study": WEIGHT_SOURCE, "members": 3},
        "design": "search",
        "search": {"sampler": "cmaes", "trials": 20},
        "tracking": {"images": 4},
    }
    outcome = train_quietly(raw, project)
    assert (outcome.complete, outcome.failed) == (20, 0)
    return project, "tiny-weights", outcome


def ensemble_runs(client: MlflowClient, experiment_id: str) -> dict[str, list[Any]]:
    """The weight study's nested runs by role: member, uniform, best."""
    roles: dict[str, list[Any]] = {}
    for run in client.search_runs([experiment_id], filter_string="tags.`ablate.role` = 'ensemble'"):
        roles.setdefault(run.data.tags["ablate.ensemble_role"], []).append(run)
    return roles


SCORE_KEYS = ("val_loss", "val_mse", "test_loss", "test_mse")


@pytest.mark.slow
def test_weight_study_report_shows_the_weights_and_every_score(weight_study: Any, tmp_path: Path) -> None:
    project, name, outcome = weight_study
    report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=2, log=False)
    answer = report.answer
    section = answer["ensemble"]
    assert answer["family"] == "ensemble" and answer["diffusion"] is None
    assert section["source"] == "study" and section["study"] == WEIGHT_SOURCE and section["members"] == 3
    (variant,) = section["variants"]

    # What MLflow holds: weights.json on the parent run, a run per member, the uniform run, the best run.
    client = MlflowClient(project.tracking_uri)
    document = json.loads(Path(client.download_artifacts(outcome.parent_run_id, "ensemble/weights.json", str(tmp_path))).read_text())
    assert variant["run_id"] == outcome.parent_run_id
    assert variant["weights"] == pytest.approx(document["weights"]) and variant["weights_sum"] == pytest.approx(1.0)
    assert [r["weight"] for r in variant["rows"] if r["kind"] == "member"] == pytest.approx(document["weights"])
    roles = ensemble_runs(client, outcome.experiment_id)
    members = {run.data.tags["ablate.source_run_id"]: run.data.metrics for run in roles["member"]}
    rows = {r["kind"]: r for r in variant["rows"] if r["kind"] != "member"}
    for row in (r for r in variant["rows"] if r["kind"] == "member"):
        for key in SCORE_KEYS:  # each member's scores are its nested run's metrics
            assert row[key] == pytest.approx(members[row["source_run_id"]][key]), (row["name"], key)
    (uniform,), (best,) = roles["uniform"], roles["best"]
    for key in SCORE_KEYS:
        assert rows["uniform"][key] == pytest.approx(uniform.data.metrics[key])
        assert rows["best"][key] == pytest.approx(best.data.metrics[key])
    assert [best.data.metrics[f"weight{i}"] for i in range(3)] == pytest.approx(variant["weights"])
    # The searched best is Optuna's best trial, and at least as good as both references on validation.
    study = optuna.load_study(study_name=name, storage=project.storage)
    assert variant["best"]["trial"] == study.best_trial.number == answer["best"]["trial"]
    assert rows["best"]["val_loss"] == pytest.approx(study.best_value)
    assert rows["best"]["val_loss"] <= min(rows["uniform"]["val_loss"], *(r["val_loss"] for r in variant["rows"] if r["kind"] == "member"))
    assert answer["best"]["weights"] == pytest.approx(study.best_trial.user_attrs["ablate.weights"])
    assert answer["best"]["study_file"] is None and answer["best"]["cell"] == study.best_trial.user_attrs["ablate.cell"]

    # A weight study trains nothing: no curves, and no best.yaml to retrain; its params are simplex
    # coordinates, not settings, so no importances either.
    assert answer["curves"] == {} and "trains nothing" in answer["curves_absent"]
    assert answer["importances"]["computed"] is False and "simplex coordinates" in answer["importances"]["reason"]
    names = {p.name for p in report.folder.iterdir()}
    assert {"index.html", "ensemble.png", "reconstructions.png", "report.md", "report.json"} <= names and "best.yaml" not in names
    # The best run's final.png has four rows (clean, noisy, best member, ensemble): cut as four.
    final = Path(client.download_artifacts(best.info.run_id, "reconstructions/final.png", str(tmp_path / "final")))
    rows_of_final = split_rows(pixels(final), 4)
    assert [r.shape[0] for r in rows_of_final] == [56] * 4 and all(r.std() > 5 for r in rows_of_final)
    assert_not_blank(pixels(report.folder / "ensemble.png"), "ensemble.png")
    page = (report.folder / "index.html").read_text()
    assert 'id="chart-ensemble"' in page and page.count('<tr class="ensemble-row ') == len(variant["rows"]) == 3 + 3
    md = (report.folder / "report.md").read_text()
    assert "## Ensemble: weights, members vs uniform vs searched" in md
    assert f"| uniform average | each weight 1/3 |  | {rows['uniform']['val_loss']:.4f} | {rows['uniform']['val_mse']:.4f} | " \
        f"{rows['uniform']['test_loss']:.4f} | {rows['uniform']['test_mse']:.4f} |" in md
    assert "| **searched weights** |" in md and "Weights: " in md


@pytest.mark.slow
def test_trained_ensemble_report_per_variant(tmp_path: Path) -> None:
    # ensemble.source: train: each trial trains its members and searches their weights; the report
    # reads each variant's median-seed run's weights.json and agrees with the run's metrics.
    project = resolve_project(home=tmp_path / "home")
    raw = tiny_study(
        name="tiny-trained-ensemble",
        data={"dataset": "mnist-embedded", "train_size": 64, "val_size": 16, "test_size": 16},
        model={"family": "ensemble", "filters": 2, "depth": 2},
        ensemble={"source": "train", "members": 2, "weight_trials": 10},
        train={"epochs": 1, "batch_size": 32},
        factors={"ensemble.members": [2]},
        repeats=1,
    )
    assert train_quietly(raw, project).complete == 1
    report = make_report("tiny-trained-ensemble", project, form="md", out=tmp_path / "md", bootstrap=0)
    section = report.answer["ensemble"]
    assert section["source"] == "train" and section["members"] is None  # a factor: each variant has its own
    (variant,) = section["variants"]
    trial = optuna.load_study(study_name="tiny-trained-ensemble", storage=project.storage).trials[0]
    metrics = MlflowClient(project.tracking_uri).get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
    assert variant["cell"] == "ensemble.members=2" and variant["run_id"] == trial.user_attrs["mlflow_run_id"]
    assert variant["weights"] == pytest.approx([metrics["weight0"], metrics["weight1"]]) and sum(variant["weights"]) == pytest.approx(1.0)
    rows = variant["rows"]
    for key in SCORE_KEYS:
        assert [r[key] for r in rows if r["kind"] == "member"] == pytest.approx([metrics[f"member0_{key}"], metrics[f"member1_{key}"]])
        assert next(r for r in rows if r["kind"] == "uniform")[key] == pytest.approx(metrics[f"uniform_{key}"])
        assert next(r for r in rows if r["kind"] == "best")[key] == pytest.approx(metrics[key])
    assert "### ensemble.members=2" in report.text
    assert "| member 1 |" in report.text or "| member 1 (best member) |" in report.text


# ---- the page in a real headless Chromium -------------------------------------------------------


NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (`make test` installs it as root: apt-get install chromium)"
)


SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"  # kept after the run (CI uploads them)


def load_in_chromium(page: Path, profile: Path, shots: Path, selectors: tuple[str, ...], charts: int) -> dict[str, Any]:
    """Open a report page in headless Chromium; count what rendered, screenshot it, keep every event.

    `charts`: how many plotly charts the page should draw (waited for, then counted once more).
    """
    shutil.rmtree(shots, ignore_errors=True)  # this run's screenshots only
    shots.mkdir(parents=True)
    with Chromium(CHROMIUM, profile) as browser:
        session = browser.open_page()
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", timeout=60)
        # One .js-plotly-plot per drawn chart (each holds several .main-svg layers, so those are not counted).
        browser.evaluate(session, "document.querySelectorAll('.js-plotly-plot').length", until=lambda n: n >= charts)
        time.sleep(0.5)  # a chart beyond the expected number would have been drawn by now
        seen = {
            "charts": browser.evaluate(session, "document.querySelectorAll('.js-plotly-plot').length"),
            "chart_ids": browser.evaluate(session, "Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.id)"),
            "rows": browser.evaluate(session, "document.querySelectorAll('#trials-table tbody tr.trial').length"),
            "image": browser.evaluate(session, "(() => { const i = document.querySelector('img.reconstructions'); return i && i.complete ? i.naturalWidth : 0; })()"),
            "images": browser.evaluate(session, "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length"),
        }
        pictures = {"page": browser.screenshot(session, shots / "page.png")}
        for selector in selectors:
            box = browser.evaluate(session, f"JSON.stringify(document.querySelector('{selector}').getBoundingClientRect())")
            name = selector.strip("#.").replace("img.", "")
            pictures[name] = browser.screenshot(session, shots / f"{name}.png", clip=json.loads(box))
        events = list(browser.events)
    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    return {**seen, "pictures": pictures, "errors": errors, "requests": requests}


def external_references(page: str) -> list[str]:
    """What in the page's own markup would load something from the network: a `src=`, a `<link href=`,
    a CSS `url(...)` or `@import` pointing at http(s) or a protocol-relative address.

    The inlined plotly.js bundle is left out: it names URLs (map tiles, topojson) that a page
    without maps never loads; the network check of the page in Chromium covers it. Trial links
    (`<a href>` to the MLflow UI) are navigation, not loads, and are allowed.
    """
    import re

    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert page.count(bundle) == 1, "plotly.js must be inlined exactly once"
    own = page.replace(bundle, "")
    remote = r"""["']?\s*(?:https?:)?//"""
    patterns = (rf"\bsrc\s*=\s*{remote}", rf"<link\b[^>]*\bhref\s*=\s*{remote}", rf"url\(\s*{remote}", r"@import")
    return [match.group(0) for pattern in patterns for match in re.finditer(pattern, own, flags=re.IGNORECASE)]


def assert_clean_page(seen: dict[str, Any], page: Path) -> None:
    """No console error, no request outside the file, nothing in the markup that would load one, no blank picture."""
    assert not seen["errors"], seen["errors"]
    assert seen["requests"] and seen["requests"][0] == page.as_uri()
    outside = [url for url in seen["requests"] if not url.startswith(("file://", "data:", "blob:"))]
    assert not outside, f"the page fetched from outside its file: {outside}"
    assert external_references(page.read_text()) == []
    for name, picture in seen["pictures"].items():
        assert picture.std() > 5 and len(np.unique(picture)) > 10, f"{name} screenshot is blank"


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_page_in_headless_chromium(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    report = make_report("tiny-report", project, form="html", out=tmp_path / "page", log=False)
    page = report.folder / "index.html"
    seen = load_in_chromium(page, tmp_path / "profile", SCREENSHOTS / "report-page",
                            ("#chart-effects", "#chart-curves", "img.reconstructions"), charts=2)
    assert seen["charts"] == 2 and seen["chart_ids"] == ["chart-effects", "chart-curves"]  # one factor: no importances
    assert seen["rows"] == 4 == len(report.answer["trials"])
    assert seen["image"] > 0, "the reconstruction picture did not load"
    assert_clean_page(seen, page)


@NEEDS_CHROMIUM
def test_multi_objective_page_in_headless_chromium(stored_two_objectives: Any, tmp_path: Path) -> None:
    project, name, _ = stored_two_objectives
    report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=2, log=False)
    page = report.folder / "index.html"
    seen = load_in_chromium(page, tmp_path / "profile", SCREENSHOTS / "multi-objective-page",
                            ("#chart-importances", "#chart-pareto", "#pareto-table"), charts=2)
    # A search has no effects, and these trials have no MLflow runs, so no curves.
    assert seen["charts"] == 2 and seen["chart_ids"] == ["chart-importances", "chart-pareto"]
    assert seen["rows"] == 40 == len(report.answer["trials"])
    assert_clean_page(seen, page)


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_diffusion_page_in_headless_chromium(diffusion_study: Any, tmp_path: Path) -> None:
    project, name = diffusion_study
    report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=0, log=False)
    page = report.folder / "index.html"
    seen = load_in_chromium(page, tmp_path / "profile", SCREENSHOTS / "diffusion-page",
                            ("#chart-curves", "#diffusion", "img.diffusion.chain", "img.diffusion.samples"), charts=2)
    assert seen["charts"] == 2 and seen["chart_ids"] == ["chart-effects", "chart-curves"]
    assert seen["images"] == 4, "each variant's chain and samples did not all load"
    assert seen["rows"] == 2
    assert_clean_page(seen, page)


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_ensemble_page_in_headless_chromium(weight_study: Any, tmp_path: Path) -> None:
    project, name, _ = weight_study
    report = make_report(name, project, form="html", out=tmp_path / "page", bootstrap=2, log=False)
    page = report.folder / "index.html"
    seen = load_in_chromium(page, tmp_path / "profile", SCREENSHOTS / "ensemble-page",
                            ("#chart-ensemble", "table.ensemble", "img.reconstructions"), charts=1)
    # A weight study: no effects (a search), no curves (it trains nothing), no importances (simplex coordinates).
    assert seen["charts"] == 1 and seen["chart_ids"] == ["chart-ensemble"]
    assert seen["image"] > 0, "the best member and ensemble reconstructions did not load"
    assert seen["rows"] == 20 == len(report.answer["trials"])
    assert_clean_page(seen, page)


class Chromium:
    """Headless Chromium driven over the DevTools protocol through a pipe (--remote-debugging-pipe).

    The pipe needs no port and no websocket library: Chromium reads NUL-terminated JSON commands
    on its fd 3 and writes responses and events on its fd 4.
    """

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._buffer = b""

    def __enter__(self) -> Chromium:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes to us
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,4000", f"--user-data-dir={self.profile}",
                 "--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(
            [self.binary, *flags], preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - the browser may be gone already; terminate below
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def send(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 60) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict:
        """Wait until an event of that name has arrived (or already has)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline - time.monotonic()))
        return next(e for e in self.events if e.get("method") == method)

    def open_page(self) -> str:
        """Attach to the start page and return the session to drive it."""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        return self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def evaluate(self, session: str, expression: str, *, until: Any = None, timeout: float = 30) -> Any:
        """Evaluate a JavaScript expression; with `until`, poll until its value satisfies it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)["result"].get("value")
            if until is None or until(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def screenshot(self, session: str, path: Path, clip: dict | None = None) -> np.ndarray:
        """Save a PNG screenshot (of `clip`, a bounding rect, or the whole page) and return its pixels."""
        import base64

        from PIL import Image

        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {k: clip[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params, session=session)["data"]))
        return np.asarray(Image.open(path).convert("L"))

    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, timeout))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3)) ![pixel](http://evil.example/p.png)",
    "a | b | **bold** _em_ `code` ~~gone~~ & &amp;",
]


def test_markdown_shows_a_studys_hostile_text_as_text(tmp_path: Path) -> None:
    """Raw HTML and Markdown in a study's description, levels and cells render as the text they are."""
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    project = resolve_project(home=tmp_path / "home")
    levels = [f"{text}.npz" for text in HOSTILE[1:]]
    description = "\n".join([*HOSTILE, "# not a heading", "- not a list", "1. not an item", "    not code"])
    raw = tiny_study(name="hostile", description=description, factors={"data.path": levels}, repeats=2,
                     data={"dataset": "mnist", "path": "x.npz", "train_size": 256, "val_size": 64, "test_size": 32})
    name = make_stored_study(project, raw, [({"data.path": level}, seed, 0.1 + 0.01 * i + 0.001 * seed)
                                            for i, level in enumerate(levels) for seed in range(2)])
    text = make_report(name, project, form="md", bootstrap=0).text

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: set[str] = set()
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    # As permissive as a renderer gets: raw HTML passed through (GitHub would sanitise it; a CI log viewer may not).
    page = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)
    parsed = Tags()
    parsed.feed(page)
    assert parsed.tags <= {"h1", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "ul", "ol", "li",
                           "pre", "strong", "br"}, parsed.tags - {"h1", "h2", "p"}
    shown = "".join(parsed.text)
    for hostile in HOSTILE:  # the description, word for word
        assert hostile in shown, hostile
    assert shown.count("# not a heading") == 1 and "- not a list" in shown and "1. not an item" in shown
    for level in levels:  # in the effects, variants and trials tables: still one cell each
        assert shown.count(f"data.path={level}") >= 2, level
    tables = [table.split("</table>")[0] for table in page.split("<table>")[1:]]
    assert len(tables) >= 3  # effects, variants, trials
    for table in tables:  # no row widened by a `|` in the study's text
        assert len({row.count("<td") + row.count("<th") for row in table.split("<tr>")[1:]}) == 1, table
