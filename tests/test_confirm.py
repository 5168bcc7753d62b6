"""Confirmation of a search's winner (`confirm: {seeds: N}`): the spec's rules, a tiny real search
confirmed on fresh seeds, and the report's exploratory and confirmatory intervals side by side.
"""

from __future__ import annotations

import io
import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from ablate.analysis.confirmation import winners_curse
from ablate.cli.main import main as cli_main
from ablate.report.make import make_report
from ablate.runtime.confirm import budget_used, is_confirmation, search_trials
from ablate.runtime.progress import StudyProgress
from ablate.runtime.run import run_study
from ablate.spec.attributes import CONFIRM_ATTR, CONFIRMS_ATTR, SEED_ATTR
from ablate.spec.errors import SpecError
from ablate.spec.loading import spec_from_dict
from ablate.spec.run_config import MAX_SEED

from conftest import tiny_study

FACTORS = {"model.skip": ["none", "concat"], "model.filters": {"type": "int", "low": 2, "high": 6, "step": 2}}


def search(**changes):
    defaults = {"design": "search", "factors": FACTORS, "search": {"sampler": "random", "trials": 4}, "confirm": {"seeds": 2}}
    return tiny_study("confirmed", **{**defaults, **changes})


def refused(raw: dict) -> str:
    with pytest.raises(SpecError) as error:
        spec_from_dict(raw)
    return str(error.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (tiny_study(confirm={"seeds": 2}), "confirm: re-runs a search's winner on fresh seeds; design grid"),
        (search(engine="keras-tuner", search={"sampler": "random", "trials": 4}), "confirm: needs engine optuna"),
        (search(objective=[{"metric": "val_loss"}, {"metric": "parameters"}], search={"sampler": "nsga2", "trials": 4}),
         "confirm: a search with several objectives has no single winner"),
        (search(factors={"model.filters": {"type": "int", "low": 8, "high": 16}}),
         "confirm: the baseline's model.filters = 4 is outside the searched range (int 8 .. 16); set it in the file's fixed settings"),
        (search(factors={"model.skip": ["none", "add"]}, model={"filters": 4, "depth": 2, "skip": "concat"}),
         "confirm: the baseline's model.skip = concat is outside the levels"),
        (search(seed=MAX_SEED - 8), "past 4,294,967,295"),
        (search(confirm={"seeds": 1}), "confirm.seeds"),
        (search(confirm={"seeds": 2, "baseline": {"model.depth": 3}}), "confirm.baseline.model.depth: not a factor"),
        (search(confirm={"seeds": 2, "baseline": {"model.filters": 12}}),
         "confirm.baseline.model.filters = 12 is outside the searched range (int 2 .. 6"),
        (search(confirm={"seeds": 2, "baseline": {"model.skip": "add"}}), "confirm.baseline.model.skip = add is outside the levels"),
    ],
)
def test_confirm_is_refused_where_it_cannot_work(raw: dict, expected: str) -> None:
    message = refused(raw)
    assert expected in message, message


def test_confirmation_seeds_are_fresh_and_counted_as_planned_but_not_fingerprinted() -> None:
    spec = spec_from_dict(search(seed=10, repeats=3)).spec
    assert spec.seeds == [10, 11, 12] and spec.confirmation_seeds == [13, 14]
    assert spec.confirmation_baseline() == {"model.skip": "concat", "model.filters": 4}  # the file's fixed settings
    assert spec.planned_trials == 4 + 2 * 2 + 1  # spread: the baseline at the winner's one seed
    averaged = spec_from_dict(search(repeats=3, search={"sampler": "random", "trials": 4, "seeds": "average"})).spec
    assert averaged.planned_trials == 4 + 2 * 2 + 3  # average: the baseline at each of the winner's seeds
    plain = spec_from_dict({k: v for k, v in search(seed=10, repeats=3).items() if k != "confirm"}).spec
    assert plain.fingerprint() == spec.fingerprint()  # a finished search can be confirmed later


def test_a_chosen_baseline_has_its_own_cell_and_run_baseline_maps_to_the_design() -> None:
    from ablate.cli.commands import baseline_overrides

    spec = spec_from_dict(search(confirm={"seeds": 2, "baseline": {"model.filters": 6}})).spec
    assert spec.confirmation_baseline() == {"model.skip": "concat", "model.filters": 6}
    assert spec.confirmation_cell("baseline") == "confirm-baseline model.filters=6,model.skip=concat"
    assert spec_from_dict(search()).spec.confirmation_cell("baseline") == "confirm-baseline"  # the fixed settings
    assert baseline_overrides(spec, ["model.filters=2"]) == ["confirm.baseline.model.filters=2"]
    chosen = spec_from_dict(search(), overrides=baseline_overrides(spec, ["model.filters=2", "model.skip=none"])).spec
    assert chosen.confirmation_baseline() == {"model.skip": "none", "model.filters": 2}
    leave_one_out = spec_from_dict(tiny_study(design="one-at-a-time")).spec
    assert baseline_overrides(leave_one_out, ["model.skip=concat"]) == ["baseline.model.skip=concat"]
    assert spec_from_dict(tiny_study(design="one-at-a-time"), overrides=["baseline.model.skip=concat"]).spec.reference == {
        "model.skip": "concat"}
    for raw, said in ((tiny_study(), "a grid runs every level"), ({k: v for k, v in search().items() if k != "confirm"},
                                                                  "a search without confirm")):
        with pytest.raises(SpecError, match=said):
            baseline_overrides(spec_from_dict(raw).spec, ["model.skip=none"])
    with pytest.raises(SpecError, match="expected FACTOR=LEVEL"):
        baseline_overrides(spec, ["model.filters"])


def test_the_winners_curse_sentence_says_how_much_the_advantage_shrank() -> None:
    said = winners_curse(-0.010, -0.004, 1, 5, direction="minimize", metric="val_loss")
    assert "shrank by 0.006 val_loss on 5 fresh seed(s), from 0.01 to 0.004 (60% of it" in said
    assert "held up" in winners_curse(0.01, 0.02, 1, 5, direction="maximize", metric="val_psnr")


def run(raw: dict, project):
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(spec_from_dict(raw), project, progress=progress)


@pytest.mark.slow
def test_a_confirmed_search_reruns_its_winner_and_baseline_on_fresh_seeds(project, capsys) -> None:
    raw = search(train={"epochs": 1, "batch_size": 64}, data={"dataset": "mnist-embedded", "train_size": 128,
                                                            "val_size": 32, "test_size": 32})
    raw["tracking"] = {"image_every": 0, "images": 4, "save_model": False}
    # The search alone first; `confirm:` added afterwards confirms the finished search.
    first = run({k: v for k, v in raw.items() if k != "confirm"}, project)
    assert (first.total, first.complete) == (4, 4)
    outcome = run(raw, project)
    assert outcome.ran == 5 and (outcome.total, outcome.complete, outcome.failed) == (9, 9, 0)

    study = optuna.load_study(study_name="confirmed", storage=project.storage)
    trials = study.get_trials()
    searched, confirming = search_trials(trials), [t for t in trials if is_confirmation(t)]
    assert len(searched) == 4 and budget_used(trials) == 4  # confirmation trials use none of the budget
    best = min(searched, key=lambda t: (t.value, t.number))
    assert all(t.state == TrialState.COMPLETE and t.user_attrs[CONFIRMS_ATTR] == best.number for t in confirming)
    winner = {t.user_attrs[SEED_ATTR] for t in confirming if t.user_attrs[CONFIRM_ATTR] == "best"}
    baseline = {t.user_attrs[SEED_ATTR] for t in confirming if t.user_attrs[CONFIRM_ATTR] == "baseline"}
    assert winner == {2, 3} and not winner & {t.user_attrs[SEED_ATTR] for t in searched}  # fresh seeds
    assert baseline == {2, 3, best.user_attrs[SEED_ATTR]}
    for t in confirming:
        expected = best.params if t.user_attrs[CONFIRM_ATTR] == "best" else {"model.skip": "concat", "model.filters": 4}
        assert t.params == expected
    assert run(raw, project).ran == 0  # nothing new: every pair ran

    answer = make_report("confirmed", project, form="json", bootstrap=0).answer
    (effect,) = answer["effects"]
    c = effect["confirmation"]
    assert effect["factor"] == "configuration" and effect["level"] == f"best (trial {best.number})"
    assert effect["baseline"] == "baseline" and effect["seeds"] == [2, 3] and effect["verdict"]
    value = {(t.user_attrs[CONFIRM_ATTR], t.user_attrs[SEED_ATTR]): t.value for t in confirming}
    own = best.user_attrs[SEED_ATTR]
    assert c["exploratory"]["seeds"] == [own] and c["exploratory"]["n"] == 1
    assert c["exploratory"]["mean"] == pytest.approx(best.value - value[("baseline", own)])
    fresh = [value[("best", s)] - value[("baseline", s)] for s in (2, 3)]
    assert c["confirmatory"]["mean"] == pytest.approx(sum(fresh) / 2) and c["confirmatory"]["n"] == 2
    assert c["confirmatory"]["ci95"] is not None and c["confirmatory"]["seeds"] == [2, 3]
    assert c["shrinkage"] == pytest.approx(c["confirmatory"]["mean"] - c["exploratory"]["mean"])
    assert c["params"] == best.params and answer["best"]["trial"] == best.number
    assert answer["design"]["trials_planned"] == 9

    assert cli_main(["report", "confirmed", "--home", str(project.home), "--format", "md", "--bootstrap", "0"]) == 0
    markdown = capsys.readouterr().out
    assert "| exploratory (the search's own seeds) |" in markdown and "| confirmatory (fresh seeds) | 2, 3 |" in markdown
    assert "Winner's curse: " in markdown
    assert cli_main(["report", "confirmed", "--home", str(project.home), "--format", "json", "--bootstrap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["effects"][0]["confirmation"]["best_trial"] == best.number
    page = make_report("confirmed", project, form="html", out=project.home / "page", log=False, bootstrap=0)
    html = (page.folder / "index.html").read_text()
    assert "confirmatory (fresh seeds)" in html and "Winner&#39;s curse" not in html and "Winner's curse: " in html
    print(markdown.split("## Effects")[1].split("## ")[0])  # shown with -s: the two intervals side by side

    # Another baseline (`ablate run --baseline`): its own trials, never mixed with the first one's.
    path = project.home / "confirmed.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["run", str(path), "--home", str(project.home), "--baseline", "model.filters=6"]) == 0
    again = [t for t in optuna.load_study(study_name="confirmed", storage=project.storage).get_trials()
             if is_confirmation(t) and t.params.get("model.filters") == 6 and t.params.get("model.skip") == "concat"]
    assert sorted(t.user_attrs[SEED_ATTR] for t in again) == sorted({2, 3, best.user_attrs[SEED_ATTR]})
    (chosen,) = make_report("confirmed", project, form="json", bootstrap=0).answer["effects"]  # the stored spec: the run's
    assert chosen["confirmation"]["baseline"] == {"model.skip": "concat", "model.filters": 6}
    assert chosen["seeds"] == [2, 3] and chosen["confirmation"]["exploratory"]["seeds"] == [own]
