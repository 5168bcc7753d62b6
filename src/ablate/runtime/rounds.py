"""Which (cell, seed) trials a study wants enqueued: every seed of every cell, or a sequential study's rounds.

`enqueue_wanted` is what `ablate run` and `ablate submit` call: with `repeats: N` every (cell, seed)
pair (`enqueue_missing`); with `repeats: {min, max, until: decided}` the rounds so far (`advance`).

Seeds added in rounds until each comparison is decided:

The plan is a function of the finished trials alone (`plan`): every cell wants the first `min`
seeds; once every wanted (cell, seed) trial has settled, the comparisons are judged at that round
(`ablate.analysis.sequential`), and each cell that a still undecided comparison needs wants the
next seed. Replaying it from the storage makes it the same in every worker and after any
interruption: a resumed study wants exactly what it wanted when it stopped.

`advance` enqueues what the plan wants and the study lacks. Whichever worker finishes a round's
last trial calls it, and so may several at once; a lock per study (`optuna_internals.round_lock`:
a PostgreSQL or MySQL advisory lock, a file lock beside a SQLite file) makes the read and the
enqueue one step, so a round is enqueued once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.analysis.effects import Effect, Observation, cell_tuple, comparison_cells, study_effects
from ablate.analysis.sequential import SequentialRule
from ablate.runtime.optuna_internals import round_lock
from ablate.runtime.storage import retry
from ablate.spec.attributes import CELL_ATTR, ERROR_ATTR, SEED_ATTR, SKIPPED
from ablate.spec.levels import Level, cell_key
from ablate.spec.study_spec import StudySpec

Pair = tuple[str, int]  # (cell key, seed)


@dataclass(frozen=True)
class RoundPlan:
    """What a sequential study wants now.

    Attributes:
        wanted: every (cell, seed) the study has asked for so far, this round's included.
        round: seeds asked of the cells still being sampled (the last round begun).
        settled: whether every wanted trial has finished (then the study is done).
        effects: the comparisons as judged at the last complete round (empty before the first).
    """

    wanted: frozenset[Pair]
    round: int
    settled: bool
    effects: list[Effect] = field(default_factory=list)

    @property
    def undecided(self) -> list[Effect]:
        """The comparisons that still need seeds."""
        return [e for e in self.effects if not (e.sequential or {}).get("decided")]


def rule_of(spec: StudySpec) -> SequentialRule:
    """The sequential rule of a study with `repeats: {min, max, until: decided}`."""
    rounds = spec.sequential
    if rounds is None:
        raise ValueError(f"study {spec.name!r} has a fixed number of seeds (repeats: {spec.repeats})")
    return SequentialRule.of(min_seeds=rounds.min, max_seeds=rounds.max, seeds=spec.seeds)


def judge(spec: StudySpec, observations: Iterable[Observation], baselines: dict[str, Level] | None = None) -> list[Effect]:
    """The sequential study's comparisons from its finished trials, as the report shows them."""
    return study_effects(
        observations, spec.levels, direction=spec.primary.direction, metric=spec.primary.metric,
        baselines={**spec.comparison_baselines, **(baselines or {})}, cells=spec.cells(),
        equivalence_margin=spec.analysis.equivalence_margin, effect_of_interest=spec.analysis.effect_of_interest,
        rule=rule_of(spec),
    )


def plan(spec: StudySpec, trials: list[FrozenTrial]) -> RoundPlan:
    """Replay the study's rounds from its trials: what it wants now (see the module docstring)."""
    rounds = spec.sequential
    if rounds is None:
        raise ValueError(f"study {spec.name!r} has a fixed number of seeds")
    cells = spec.cells()
    factors = spec.levels
    by_tuple = {cell_tuple(cell, factors): cell_key(cell) for cell in cells}
    settled = _settled_pairs(trials)
    observations = [(_pair(t), Observation(params=dict(t.params), seed=_pair(t)[1], value=float(t.values[0])))
                    for t in sorted(trials, key=lambda t: t.number) if t.state == TrialState.COMPLETE and t.values]
    seeds = spec.seeds
    wanted = {(cell_key(cell), seed) for cell in cells for seed in seeds[: rounds.min]}
    n = rounds.min
    effects: list[Effect] = []
    while True:
        if not wanted <= settled:
            return RoundPlan(frozenset(wanted), n, False, effects)
        effects = judge(spec, [o for pair, o in observations if pair in wanted])  # what this round saw, no later seed
        undecided = [e for e in effects if not (e.sequential or {}).get("decided")]
        if not undecided or n >= rounds.max:
            return RoundPlan(frozenset(wanted), n, True, effects)
        needed = set().union(*(comparison_cells(factors, e.factor, (e.level, e.baseline), cells) for e in undecided))
        wanted |= {(by_tuple[key], seeds[n]) for key in needed if key in by_tuple}
        n += 1


def enqueue_missing(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue every (cell, seed) pair without a finished, running or waiting trial; return how many."""
    present = {
        (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR))
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    }
    added = 0
    for cell in spec.cells():
        key = cell_key(cell)
        for seed in spec.seeds:
            if (key, seed) in present:
                continue
            study.enqueue_trial(params=dict(cell), user_attrs={CELL_ATTR: key, SEED_ATTR: seed})
            added += 1
    return added


def enqueue_wanted(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue the trials the study lacks, failed ones again: every (cell, seed), or a sequential study's rounds so far.

    What `ablate run` and `ablate submit` do before any trial runs: as with a fixed number of
    seeds, a trial that failed (a NaN loss) is tried again by the next run, not within one.
    """
    if spec.sequential is None:
        return enqueue_missing(study, spec)
    return advance(study, spec, retry_failed=True)[1]


def advance(study: optuna.Study, spec: StudySpec, *, retry_failed: bool = False) -> tuple[RoundPlan, int]:
    """Enqueue the (cell, seed) trials the plan wants and the study lacks, once; return the plan and how many.

    `retry_failed`: also enqueue again the wanted trials that failed on their own; a worker between
    trials leaves them failed (a seed that gives NaN would fail again at once, for ever).
    """
    with round_lock(study):
        trials = retry(lambda: study.get_trials(deepcopy=False), what="read the trials")
        now = plan(spec, trials)
        present = {(t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) for t in trials
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
                   or (t.state == TrialState.FAIL and _failed_for_good(t) and not retry_failed)}
        cells = {cell_key(cell): cell for cell in spec.cells()}
        missing = sorted(now.wanted - present, key=lambda pair: (pair[1], list(cells).index(pair[0])))
        for key, seed in missing:
            retry(lambda: study.enqueue_trial(params=dict(cells[key]), user_attrs={CELL_ATTR: key, SEED_ATTR: seed}),  # noqa: B023
                  what="enqueue a round")
    return now, len(missing)


def describe(now: RoundPlan, spec: StudySpec, *, added: int) -> list[str]:
    """What `ablate run` says after a round: each comparison decided and why, and the trials still planned."""
    rounds = spec.sequential
    if rounds is None or not now.effects:
        return []
    lines = []
    for effect in now.effects:
        info = effect.sequential or {}
        what = f"{effect.factor}={effect.level} vs {effect.baseline}"
        ci = effect.difference.ci95
        interval = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "no interval"
        lines.append(f"  {what}: {info.get('reason', '?')} after {effect.difference.n} seeds, interval {interval}"
                     + (f" -> {effect.verdict}" if info.get("decided") else ""))
    looked = now.round - 1 if added else now.round  # the round just judged (a new one was begun after it)
    head = (f"after round {looked} ({looked} seeds per cell, at most {rounds.max}): "
            f"{len(now.effects) - len(now.undecided)} of {len(now.effects)} comparison(s) decided")
    tail = (f"  {added} more trial(s) planned: round {now.round} adds seed {spec.seeds[now.round - 1]} to the cells "
            "of the undecided comparison(s)" if added else
            "  no more trials: every comparison is decided" if not now.undecided else
            f"  no more trials: {rounds.max} seeds ran, the most the study allows" if now.settled else "")
    return [head, *lines, *([tail] if tail else [])]


def _settled_pairs(trials: list[FrozenTrial]) -> set[Pair]:
    """(cell, seed) pairs that will not run again: finished, or failed on their own with no retry waiting."""
    live = {_pair(t) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
    done = {_pair(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = {_pair(t) for t in trials if t.state == TrialState.FAIL and _failed_for_good(t)}
    return done | (failed - live)


def _failed_for_good(trial: FrozenTrial) -> bool:
    # An interrupted trial runs again (the next `ablate run` enqueues it); a skipped one was a duplicate.
    error = str(trial.user_attrs.get(ERROR_ATTR, ""))
    return not error.startswith(("interrupted", SKIPPED))


def _pair(trial: FrozenTrial) -> Pair:
    return trial.user_attrs.get(CELL_ATTR, ""), int(trial.user_attrs.get(SEED_ATTR, -1))
