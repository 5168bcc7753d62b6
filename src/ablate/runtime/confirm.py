"""A search's winner confirmed on fresh seeds (`confirm: {seeds: N}`): enqueued once the search is done.

A search picks its best trial from many noisy ones, so that trial's value is biased in its
favour (the winner's curse). Once the search's budget is used and none of its trials is waiting
or running, the first worker to find nothing left to ask enqueues the confirmation trials:

- `confirm-best`: the best trial's params on each fresh seed (`StudySpec.confirmation_seeds`,
  seed + repeats onward: seeds no search trial trained with);
- `confirm-baseline`: the baseline (`StudySpec.confirmation_baseline`, each factor at the file's
  fixed setting) on the same fresh seeds, and on the best trial's own seeds (one with
  `search.seeds: spread`, all of `spec.seeds` with `average`), so the search's own estimate can be
  paired by seed too.

Each carries `CONFIRM_ATTR` (best / baseline) and `CONFIRMS_ATTR` (the trial it confirms). They
are not search trials: they do not count against the search's budget (`budget_used`), and the
best trial, the importances and the sampler's history leave them out (`search_trials`). Only
missing (cell, seed) pairs are enqueued; a pair whose trial failed on its own (a NaN loss) is not
enqueued again, as a search trial that failed is not (an interrupted one is).
"""

from __future__ import annotations

import math

from optuna.trial import FrozenTrial, TrialState

from ablate.runtime.optuna_internals import round_lock
from ablate.runtime.storage import retry
from ablate.runtime.studies import DONE_STATES, LIVE_STATES
from ablate.runtime.work import StudyWork
from ablate.spec.attributes import CELL_ATTR, CONFIRM_ATTR, CONFIRMS_ATTR, ERROR_ATTR, SEED_ATTR, SKIPPED
from ablate.spec.levels import Level
from ablate.spec.study_spec import StudySpec


def is_confirmation(trial: FrozenTrial) -> bool:
    """Whether the trial re-runs a search's winner or its baseline (not a search trial)."""
    return CONFIRM_ATTR in trial.user_attrs


def search_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The search's own trials: all but the confirmation trials."""
    return [t for t in trials if not is_confirmation(t)]


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count against a search's budget: all but skipped, interrupted and confirmation ones.

    An interrupted or stale trial is run again (as a retry, or as a new trial), so it does not use
    up the budget; a trial that failed on its own (a NaN loss) does.
    """
    return sum(1 for t in search_trials(trials) if t.state != TrialState.FAIL or _failed_on_its_own(t))


def best_search_trial(spec: StudySpec, trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The complete search trial with the best first objective (the lowest number among ties), or None."""
    sign = 1 if spec.primary.direction == "minimize" else -1
    done = [t for t in search_trials(trials) if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0])]
    return min(done, key=lambda t: (sign * t.values[0], t.number), default=None)


def confirmation_plan(spec: StudySpec, best: FrozenTrial) -> list[tuple[str, int, dict[str, Level]]]:
    """(role, seed, params) of every confirmation trial of `best`: the winner and the baseline."""
    fresh = spec.confirmation_seeds
    own = list(spec.seeds) if spec.search.seeds == "average" else [int(best.user_attrs[SEED_ATTR])]
    baseline = spec.confirmation_baseline()
    return [("best", seed, dict(best.params)) for seed in fresh] + [
        ("baseline", seed, dict(baseline)) for seed in dict.fromkeys([*own, *fresh])
    ]


def enqueue_confirmation(work: StudyWork) -> int:
    """Enqueue the missing confirmation trials once the search is done; return how many (0 without `confirm`)."""
    spec = work.spec
    if spec.confirm is None or spec.design != "search":
        return 0
    if budget_used(search_trials(work.trials())) < spec.search.trials:
        return 0  # cheap first look, without the lock: the search is still sampling
    with round_lock(work.study):  # read and enqueue as one step, so two workers enqueue the confirmation once
        return _enqueue_confirmation(work)


def _enqueue_confirmation(work: StudyWork) -> int:
    spec = work.spec
    trials = work.trials()
    searched = search_trials(trials)
    if any(t.state in LIVE_STATES for t in searched) or budget_used(searched) < spec.search.trials:
        return 0  # the search is not done: its winner is not known yet
    best = best_search_trial(spec, searched)
    if best is None:
        return 0
    present = {
        (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR))
        for t in trials
        if is_confirmation(t) and (t.state in (*DONE_STATES, *LIVE_STATES) or _failed_on_its_own(t))
    }
    added = 0
    for role, seed, params in confirmation_plan(spec, best):
        cell = spec.confirmation_cell(role)
        if (cell, seed) in present:
            continue
        attrs = {CELL_ATTR: cell, SEED_ATTR: seed, CONFIRM_ATTR: role, CONFIRMS_ATTR: best.number}
        retry(lambda: work.study.enqueue_trial(params=params, user_attrs=attrs), what="enqueue a confirmation trial")  # noqa: B023 - called at once
        added += 1
    return added


def _failed_on_its_own(trial: FrozenTrial) -> bool:
    """A FAIL trial that ran and failed (a NaN loss, an error), not one skipped or interrupted."""
    error = str(trial.user_attrs.get(ERROR_ATTR, ""))
    return trial.state == TrialState.FAIL and bool(error) and not error.startswith((SKIPPED, "interrupted"))
