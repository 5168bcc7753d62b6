"""Seeds added until decided: the boundary, the rounds replayed from a real storage, once-only rounds, real studies.

The statistics are checked by simulation here only as far as a fast test can (a few thousand
sequences); `benchmarks/sequential.py` simulates 1,000 studies per scenario and prints the table
that docs/report.md quotes.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from ablate.analysis.sequential import SequentialRule, boundary, decide, look, nominal_level
from ablate.cli.main import main
from ablate.runtime.rounds import advance, plan
from ablate.runtime.storage import open_storage
from ablate.spec.attributes import CELL_ATTR, ERROR_ATTR, SEED_ATTR
from ablate.spec.errors import SpecError
from ablate.spec.levels import cell_key
from ablate.spec.loading import spec_from_dict
from conftest import tiny_study
from test_distributed import database, sqlite_file


def rule(min_seeds: int = 3, max_seeds: int = 10, comparisons: int = 1, margin: float | None = None) -> SequentialRule:
    return SequentialRule(min_seeds=min_seeds, max_seeds=max_seeds, seeds=tuple(range(max_seeds)),
                          comparisons=comparisons, margin=margin)


# --- the boundary and the looks -----------------------------------------------------------------


def test_the_boundary_is_strict_early_near_plain_late_and_the_same_each_time() -> None:
    levels = [nominal_level(n, 3, 12, 0.05) for n in range(3, 13)]
    assert levels == sorted(levels) and levels[0] < 0.005 < levels[-1] < 0.05  # Wang-Tsiatis 0.25: rising
    assert nominal_level(5, 5, 5, 0.05) == 0.05  # a single look is the plain interval
    assert nominal_level(12, 3, 5, 0.05) > nominal_level(12, 3, 12, 0.05)  # more looks, a stricter boundary
    boundary.cache_clear()
    assert nominal_level(12, 3, 12, 0.05) == levels[-1]  # a fixed generator: every process agrees
    assert nominal_level(12, 3, 12, 0.01) < levels[-1]  # Bonferroni's share of alpha is stricter still


@pytest.mark.parametrize("bad", [(1, 5), (5, 3), (3, 51)])
def test_the_boundary_refuses_impossible_looks(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="looks need"):
        boundary(*bad, 0.05)


def test_under_the_null_the_repeated_intervals_keep_their_error_at_any_stopping_look() -> None:
    # 1,500 null sequences of 10 seeds, a look after each round from 3: stopping at the first
    # look whose interval excludes zero claims an effect at most ~5% of the time (3 SE: 1.7%),
    # where the plain 95% t interval at every look would claim one about 19% of the time.
    rng = np.random.default_rng(7)
    r = rule(3, 10)
    claims = plain = 0
    for _ in range(1500):
        differences = dict(enumerate(rng.standard_normal(10)))
        claims += decide(differences, r, rounds=10).reason == "excludes zero"
        plain += any(look(differences, SequentialRule(3, 10, tuple(range(10)), 1, alpha=0.05), n).p_nominal < 0.05
                     for n in range(3, 11))
    assert claims / 1500 <= 0.05 + 0.017
    assert plain / 1500 > 0.12  # the naive rule really would inflate it


def test_a_large_effect_is_decided_early_and_stays_decided() -> None:
    rng = np.random.default_rng(1)
    differences = {s: 3.0 + rng.standard_normal() * 0.5 for s in range(10)}
    at = decide(differences, rule(3, 10), rounds=10)
    assert at.reason == "excludes zero" and at.n < 10
    assert at.seeds == tuple(range(at.n))  # the look it stopped at, not the later seeds
    assert at.interval is not None and at.interval[0] > 0


def test_identical_variants_are_equivalent_with_a_margin_and_run_to_max_without() -> None:
    rng = np.random.default_rng(2)
    small = {s: rng.standard_normal() * 0.001 for s in range(8)}
    with_margin = decide(small, rule(3, 8, margin=0.05), rounds=8)
    assert with_margin.reason == "inside margin" and with_margin.n == 3
    without = decide(small, rule(3, 8), rounds=8)
    assert without.reason == "max reached" and without.n == 8
    assert decide(small, rule(3, 8), rounds=5).reason == "undecided"  # still rounds to go


def test_a_failed_seed_leaves_a_gap_and_too_few_pairs_decide_nothing() -> None:
    differences = {0: 5.0, 2: 5.1}  # seed 1 failed: two pairs at round 3, below min
    at = look(differences, rule(3, 6), 3)
    assert at.seeds == (0, 2) and at.reason == "undecided"


# --- the spec ----------------------------------------------------------------------------------


def test_repeats_rounds_in_the_study_file() -> None:
    spec = spec_from_dict(tiny_study(repeats={"min": 3, "max": 6, "until": "decided"})).spec
    assert spec.sequential is not None and spec.max_repeats == 6 and spec.seeds == list(range(6))
    assert spec.planned_trials == 12  # at most
    assert spec_from_dict(tiny_study(repeats=4)).spec.sequential is None  # a number keeps its meaning


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"repeats": {"min": 5, "max": 3}}, "repeats: min (5) is more than max (3)"),
        ({"repeats": {"min": 1, "max": 3}}, "repeats.min"),
        ({"repeats": {"max": 51}}, "repeats.max"),
        ({"repeats": {"until": "forever"}}, "repeats.until"),
        ({"repeats": {"min": 3, "every": 2}}, "repeats.every"),
        ({"repeats": {"min": 3}, "design": "search", "search": {"trials": 4}}, "a search has no planned comparisons"),
        ({"repeats": {"min": 3}, "factors": {"model.skip": ["concat"]}}, "needs a comparison"),
    ],
)
def test_bad_rounds_are_refused_by_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_dict(tiny_study(**changes))


# --- rounds replayed from a real storage ---------------------------------------------------------


def one_at_a_time() -> Any:
    return spec_from_dict(tiny_study(
        factors={"model.skip": ["concat", "none"], "model.filters": [8, 4]}, design="one-at-a-time",
        repeats={"min": 3, "max": 5, "until": "decided"},
    )).spec


def add(study: optuna.Study, cell: dict[str, Any], seed: int, value: float | None, *, error: str = "") -> None:
    distributions = {"model.skip": CategoricalDistribution(["concat", "none"]), "model.filters": CategoricalDistribution([8, 4])}
    attrs: dict[str, Any] = {CELL_ATTR: cell_key(cell), SEED_ATTR: seed, **({ERROR_ATTR: error} if error else {})}
    state = TrialState.COMPLETE if value is not None else TrialState.FAIL
    study.add_trial(create_trial(params=dict(cell), distributions={k: distributions[k] for k in cell},
                                 value=value, state=state, user_attrs=attrs))


def planted(seed: int) -> dict[str, float]:
    """Values per cell: removing the skip costs 0.5 (sure), the filters change nothing sure."""
    noise = [0.01, -0.012, 0.004, 0.02, -0.015][seed]
    return {"ref": 1.0 + seed * 0.1, "none": 1.5 + seed * 0.1 + 0.001 * seed, "small": 1.0 + seed * 0.1 + noise}


def test_only_the_cells_of_undecided_comparisons_get_the_next_seed(tmp_path: Path) -> None:
    spec = one_at_a_time()
    ref, none, small = spec.cells()  # the reference, skip removed, fewer filters
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert plan(spec, study.trials).wanted == {(cell_key(c), s) for c in (ref, none, small) for s in range(3)}
    for seed in range(3):
        values = planted(seed)
        for cell, name in ((ref, "ref"), (none, "none"), (small, "small")):
            add(study, cell, seed, values[name])
    now = plan(spec, study.trials)
    skip, filters = now.effects
    assert skip.sequential["decided"] and skip.verdict == "worse" and skip.component == "helps"
    assert not filters.sequential["decided"]
    assert now.round == 4
    assert now.wanted - {(cell_key(c), s) for c in (ref, none, small) for s in range(3)} == {
        (cell_key(ref), 3), (cell_key(small), 3)}  # the skip's comparison is done: its cell gets no seed 3


def test_a_round_waits_for_every_trial_and_an_interrupted_one_is_not_settled(tmp_path: Path) -> None:
    spec = one_at_a_time()
    ref, none, small = spec.cells()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    for seed in range(3):
        values = planted(seed)
        add(study, ref, seed, values["ref"])
        add(study, none, seed, values["none"])
        if seed < 2:
            add(study, small, seed, values["small"])
    add(study, small, 2, None, error="interrupted by SIGTERM")
    assert not plan(spec, study.trials).settled and plan(spec, study.trials).round == 3  # waits for the retry
    add(study, small, 2, None, error="NonFiniteLossError: val_loss is nan")  # failed on its own: settled, a gap
    now = plan(spec, study.trials)
    assert now.round == 4 and len(now.effects[1].seeds) == 2


def _advance_at_barrier(storage: str, name: str, raw: dict[str, Any], barrier: Any, queue: Any) -> None:
    spec = spec_from_dict(raw).spec
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=5, grace=30))
    barrier.wait(timeout=60)
    queue.put(advance(study, spec)[1])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_round_is_enqueued_once_by_processes_racing_for_it(backend: str) -> None:
    raw = tiny_study(factors={"model.skip": ["concat", "none"], "model.filters": [8, 4]}, design="one-at-a-time",
                     repeats={"min": 3, "max": 5, "until": "decided"})
    spec = spec_from_dict(raw).spec
    ref, none, small = spec.cells()
    with (database("rounds") if backend == "postgresql" else sqlite_file("rounds")) as storage:
        study = optuna.create_study(study_name="rounds", storage=open_storage(storage, heartbeat=5, grace=30))
        for seed in range(3):
            values = planted(seed)
            for cell, label in ((ref, "ref"), (none, "none"), (small, "small")):
                add(study, cell, seed, values[label])
        context = multiprocessing.get_context("spawn")
        barrier, queue = context.Barrier(4), context.Queue()
        procs = [context.Process(target=_advance_at_barrier, args=(storage, "rounds", raw, barrier, queue)) for _ in range(4)]
        for p in procs:
            p.start()
        added = sorted(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert added == [0, 0, 0, 2]  # one process enqueued the round's two trials, the others found them there
        waiting = optuna.load_study(study_name="rounds", storage=storage).get_trials(states=(TrialState.WAITING,))
        assert sorted((t.user_attrs[CELL_ATTR], t.user_attrs[SEED_ATTR]) for t in waiting) == sorted(
            [(cell_key(ref), 3), (cell_key(small), 3)])


# --- real studies ------------------------------------------------------------------------------


def test_a_large_effect_stops_before_max_and_the_report_says_so(write_study: Any, project: Any, capsys: Any) -> None:
    raw = tiny_study("big", factors={"model.filters": [16, 2]}, repeats={"min": 3, "max": 6, "until": "decided"},
                     train={"epochs": 2, "batch_size": 64}, tracking={"image_every": 0, "images": 4})
    path = write_study(raw)
    # Forks of 3 trials each: round 3 ends with a fork's last trial, which must still enqueue round 4.
    assert main(["run", str(path), "--home", str(project.home), "--recycle-after", "3"]) == 0
    printed = capsys.readouterr()
    assert "seeds per cell, at most 6): 1 of 1 comparison(s) decided" in printed.err and "no more trials: every comparison is decided" in printed.err
    study = optuna.load_study(study_name="big", storage=project.storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert 6 <= len(complete) < 12  # stopped before the fixed design's 12 trials
    out = project.home / "report"
    assert main(["report", "big", "--home", str(project.home), "--out", str(out), "--bootstrap", "0"]) == 0
    answer = json.loads((out / "report.json").read_text())
    effect = answer["effects"][0]
    assert {"verdict", "seeds", "mde80", "equivalence", "confirmation", "method", "sequential"} <= effect.keys()
    assert effect["verdict"] == "worse" and effect["sequential"]["decided"]
    assert effect["sequential"]["reason"] == "excludes zero" and len(effect["seeds"]) < 6
    assert answer["design"]["sequential"]["trials_run"] == len(complete)
    assert "seeds added until decided" in (out / "report.md").read_text()
    assert main(["run", str(path), "--home", str(project.home)]) == 0  # resumed: nothing more to run
    assert len(optuna.load_study(study_name="big", storage=project.storage).trials) == len(study.trials)


def test_a_factor_without_effect_ends_removable(write_study: Any, project: Any, capsys: Any) -> None:
    # A time budget far above what a trial takes changes nothing: the two variants train alike.
    raw = tiny_study("same", factors={"train.max_seconds": [None, 3600]},
                     repeats={"min": 3, "max": 5, "until": "decided"}, analysis={"equivalence_margin": 0.01},
                     design="one-at-a-time", train={"epochs": 1, "batch_size": 64},
                     tracking={"image_every": 0, "images": 4}, data={"dataset": "mnist-embedded", "train_size": 128,
                                                                      "val_size": 64, "test_size": 0})
    path = write_study(raw)
    assert main(["run", str(path), "--home", str(project.home)]) == 0
    printed = capsys.readouterr().err
    assert "after round 3 (3 seeds per cell, at most 5): 1 of 1 comparison(s) decided" in printed and "inside margin after 3 seeds" in printed
    out = project.home / "report"
    assert main(["report", "same", "--home", str(project.home), "--out", str(out), "--bootstrap", "0"]) == 0
    answer = json.loads((out / "report.json").read_text())
    effect = answer["effects"][0]
    assert effect["verdict"] == "equivalent" and effect["component"] == "removable"
    assert effect["equivalence"]["equivalent"] and effect["sequential"]["reason"] == "inside margin"
    assert "| component |" in (out / "report.md").read_text()
